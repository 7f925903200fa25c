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
