// Redirects, direct responses and rewrites of VirtualService http routes, with Istio's
// rules.
#include "common/strings.h"
#include "operator/api/decode_istio_internal.h"

namespace skiff::api {

namespace {

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * 1024;

// A path as a request target's origin form: "/" then path and query characters.
std::string ValidatePath(std::string_view path) {
  // Built by append: GCC 12 warns falsely (-Wrestrict) on "\"" + std::string(...) here.
  auto quoted = [path](std::string_view why) {
    std::string out = "\"";
    out.append(path).append("\" ").append(why);
    return out;
  };
  if (HasCrLfNul(path)) {
    return "must not contain CR, LF or NUL";
  }
  if (path.empty() || path[0] != '/') {
    return quoted("is not a path: it must start with '/'");
  }
  for (unsigned char c : path) {
    if (c <= 0x20 || c == 0x7f || c == '#') {
      return quoted(
          "is not a valid path: no spaces, control characters or '#' (percent-encode them)");
    }
  }
  return {};
}

}  // namespace

HTTPRedirect DecodeRedirect(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  Reader rr(j, path, msgs);
  HTTPRedirect red;
  red.uri = rr.String("uri");
  red.authority = rr.String("authority");
  red.scheme = rr.String("scheme");
  red.prefix_rewrite = rr.String("prefixRewrite");
  bool has_port = false;
  if (auto port = rr.Int("port")) {
    has_port = true;
    if (*port < 1 || *port > 65535) {
      msgs.Error(rr.Path("port"), "must be a port number between 1 and 65535");
    } else {
      red.port = static_cast<uint32_t>(*port);
    }
  }
  if (rr.Get("derivePort") != nullptr) {
    std::string derive = rr.String("derivePort");
    if (derive == "FROM_REQUEST_PORT") {
      red.derive_port = true;
    } else if (derive != "FROM_PROTOCOL_DEFAULT") {
      msgs.Error(rr.Path("derivePort"),
                 "unknown value \"" + derive + "\" (FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT)");
    }
    if (has_port) {
      msgs.Error(rr.path(), "port and derivePort cannot both be set");
    }
  }
  red.redirect_code = rr.Int("redirectCode").value_or(0);
  if (red.redirect_code != 0 && red.redirect_code != 301 && red.redirect_code != 302 &&
      red.redirect_code != 303 && red.redirect_code != 307 && red.redirect_code != 308) {
    msgs.Error(rr.Path("redirectCode"), "must be one of 301, 302, 303, 307, 308");
  }
  if (red.uri.empty() && red.authority.empty() && red.scheme.empty() && !has_port &&
      red.prefix_rewrite.empty() && rr.Get("derivePort") == nullptr) {
    msgs.Error(path, "a redirect must set uri, prefixRewrite, authority, scheme or port");
  }
  if (!red.uri.empty() && !red.prefix_rewrite.empty()) {
    msgs.Error(path, "uri and prefixRewrite cannot both be set");
  }
  // Istio accepts a uri that is not a path ("t"); it must still be safe on the wire.
  for (auto [field, value] :
       {std::pair{"uri", &red.uri}, std::pair{"prefixRewrite", &red.prefix_rewrite}}) {
    for (unsigned char c : *value) {
      if (c < 0x20 || c == 0x7f || c == ' ') {
        msgs.Error(rr.Path(field),
                   "must not contain spaces or control characters (CR, LF, NUL, "
                   "...)");
        break;
      }
    }
  }
  if (!red.uri.empty() && red.uri[0] != '/') {
    msgs.Warn(
        rr.Path("uri"),
        "\"" + red.uri + "\" does not start with '/'; the Location path is \"/" + red.uri + "\"");
  }
  if (!red.authority.empty()) {
    if (auto err = ValidateAuthority(red.authority); !err.empty()) {
      msgs.Error(rr.Path("authority"), err);
    }
  }
  if (!red.scheme.empty()) {
    bool ok = std::isalpha(static_cast<unsigned char>(red.scheme[0])) != 0;
    for (unsigned char c : red.scheme) {
      ok = ok && (std::isalnum(c) != 0 || c == '+' || c == '-' || c == '.');
    }
    if (!ok) {
      msgs.Error(rr.Path("scheme"), "\"" + red.scheme + "\" is not a URI scheme (http, https)");
    }
  }
  return red;
}

HTTPDirectResponse DecodeDirectResponse(const nlohmann::json& j, const std::string& path,
                                        Messages& msgs) {
  Reader dr(j, path, msgs);
  HTTPDirectResponse resp;
  auto status = dr.Int("status");
  resp.status = status.value_or(0);
  if (!status) {
    msgs.Error(dr.Path("status"), "required");
  } else if (resp.status < 200 || resp.status > 599) {
    msgs.Error(dr.Path("status"), "must be an HTTP status between 200 and 599");
  }
  if (const auto* b = dr.Get("body")) {
    Reader br(*b, dr.Path("body"), msgs);
    bool is_string = br.Get("string") != nullptr;
    bool is_bytes = br.Get("bytes") != nullptr;
    if (is_string && is_bytes) {
      msgs.Error(br.path(), "only one of string or bytes may be set");
    }
    std::string at = br.Path(is_bytes ? "bytes" : "string");
    if (is_bytes) {
      std::string text = br.String("bytes");
      std::string decoded;
      if (!Base64Decode(text, &decoded)) {
        msgs.Error(at, "not valid base64");
      } else if (!IsValidUtf8(decoded)) {
        msgs.Error(at, "skiff serves text bodies only: the decoded bytes are not UTF-8");
      } else {
        resp.body = std::move(decoded);
      }
    } else {
      resp.body = br.String("string");
    }
    if (resp.body.size() > kMiB) {
      msgs.Error(at, "a direct response body must be at most 1 MiB (it is " +
                         std::to_string(resp.body.size()) + " bytes)");
    } else if (resp.body.size() > 100 * kKiB) {
      msgs.Warn(at, "a direct response body over 100 KiB costs every proxy memory");
    }
  }
  return resp;
}

HTTPRewrite DecodeRewrite(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  Reader rw(j, path, msgs);
  HTTPRewrite rewrite;
  rewrite.uri = rw.String("uri");
  rewrite.authority = rw.String("authority");
  if (const auto* rx = rw.Get("uriRegexRewrite")) {
    Reader xr(*rx, rw.Path("uriRegexRewrite"), msgs);
    std::string match = xr.String("match");
    std::string sub = xr.String("rewrite");
    if (match.empty()) {
      msgs.Error(xr.Path("match"), "required");
    } else {
      CheckRegex(match, xr.Path("match"), msgs);
    }
    if (sub.empty()) {
      msgs.Error(xr.Path("rewrite"), "required");
    } else if (HasCrLfNul(sub)) {
      msgs.Error(xr.Path("rewrite"), "must not contain CR, LF or NUL");
    }
    rewrite.uri_regex = std::make_pair(match, sub);
    if (!rewrite.uri.empty()) {
      msgs.Error(rw.path(), "uri and uriRegexRewrite cannot both be set");
    }
  }
  if (rewrite.uri.empty() && !rewrite.uri_regex && rewrite.authority.empty()) {
    msgs.Error(rw.path(), "a rewrite must set uri, uriRegexRewrite or authority");
  }
  if (!rewrite.uri.empty()) {
    if (auto err = ValidatePath(rewrite.uri); !err.empty()) {
      msgs.Error(rw.Path("uri"), err);
    }
  }
  if (!rewrite.authority.empty()) {
    if (auto err = ValidateAuthority(rewrite.authority); !err.empty()) {
      msgs.Error(rw.Path("authority"), err);
    }
  }
  return rewrite;
}

}  // namespace skiff::api
