#pragma once
// skiffctl's commands that live in files of their own.
#include <string>
#include <vector>

namespace skiff::cli {

// skiffctl proxy-status [--operator HOST:PORT]
int ProxyStatus(const std::vector<std::string>& args);
// skiffctl proxy-config listeners|routes|clusters|endpoints|all [PROXY] [--admin HOST:PORT]
//   [--operator HOST:PORT] [-o short|json|yaml]
int ProxyConfig(const std::vector<std::string>& args);
// skiffctl inject -f FILE|- [--proxy-image IMAGE] [--xds-address HOST:PORT] [-o yaml|json]
int Inject(const std::vector<std::string>& args);

}  // namespace skiff::cli
