#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace skiff {

std::vector<std::string> Split(std::string_view s, char sep, bool skip_empty = true);
std::string_view Trim(std::string_view s);
std::string ToLower(std::string_view s);
bool StartsWith(std::string_view s, std::string_view prefix);
bool EndsWith(std::string_view s, std::string_view suffix);
std::string Join(const std::vector<std::string>& parts, std::string_view sep);

}  // namespace skiff

namespace skiff {

// Whether `s` is well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or code points
// beyond U+10FFFF). When it is not, `*bad` is the offset of the first byte that is wrong.
bool IsValidUtf8(std::string_view s, size_t* bad = nullptr);
// `s` with each invalid byte replaced by U+FFFD.
std::string ToValidUtf8(std::string_view s);
// Standard base64 (RFC 4648, padding optional) into `*out`; false when `s` is not base64.
bool Base64Decode(std::string_view s, std::string* out);
std::string Base64Encode(std::string_view s);

}  // namespace skiff
