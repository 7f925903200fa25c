#pragma once
// The Location of an HTTP redirect route (Istio's HTTPRedirect).
#include <string>
#include <string_view>

#include "skiff/v1/config.pb.h"

namespace skiff::policy {

// scheme: the redirect's, else `request_scheme`; authority: the redirect's, else the
// request's host, keeping its port unless the redirect sets one (a default port, of the
// final scheme or of the request's when the scheme changes, is left out); path: the redirect's uri
// (the query kept unless the uri has its own), or its prefix_rewrite in place of the
// route's `matched_prefix` ("/" for a route without a prefix match), else the request's
// path; the request's query follows.
std::string RedirectLocation(const v1::Redirect& redirect, std::string_view request_scheme,
                             std::string_view authority, std::string_view path,
                             std::string_view query, std::string_view matched_prefix = "/");

// The status of a redirect: its response_code, 301 when unset.
int RedirectStatus(const v1::Redirect& redirect);

}  // namespace skiff::policy
