#pragma once
// The bodies of the proxy's local replies, as Envoy words them.
#include <string_view>

namespace skiff::proxy {

inline constexpr std::string_view kTerminationBody =
    "upstream connect error or disconnect/reset before headers. reset reason: connection "
    "termination";
inline constexpr std::string_view kRemoteResetBody =
    "upstream connect error or disconnect/reset before headers. reset reason: remote reset";
inline constexpr std::string_view kOverflowBody =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";
inline constexpr std::string_view kConnectFailureBody =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
inline constexpr std::string_view kConnectTimeoutBody =
    "upstream connect error or disconnect/reset before headers. reset reason: connection timeout";
inline constexpr std::string_view kTimeoutBody = "upstream request timeout";

}  // namespace skiff::proxy
