#pragma once
// A small command-line parser shared by skiff-operator, skiff-proxy and skiffctl, so that
// every binary has the same --help / --version behaviour and rejects an unknown flag or a
// bad value with a message naming it and exit code 2.
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace skiff {

inline constexpr int kExitUsage = 2;

class FlagSet {
 public:
  // Parses a flag's value; returns an error message ("expected an integer") or nullopt.
  using Parser = std::function<std::optional<std::string>(std::string_view value)>;

  FlagSet(std::string program, std::string summary);

  // `names` is "long" or "long,s" for a one-letter alias (-s).
  void AddString(std::string_view names, std::string* target, std::string help,
                 std::string metavar = "VALUE");
  void AddStringList(std::string_view names, std::vector<std::string>* target, std::string help,
                     std::string metavar = "VALUE");
  void AddInt(std::string_view names, int64_t* target, int64_t min, int64_t max, std::string help);
  void AddBool(std::string_view names, bool* target, std::string help);
  void AddDuration(std::string_view names, std::chrono::milliseconds* target, std::string help);
  void AddCustom(std::string_view names, Parser parser, std::string help, std::string metavar);

  // Allows positional arguments (collected into positional()); by default they are errors.
  void AllowPositional(std::string metavar) { positional_metavar_ = std::move(metavar); }

  // Returns nullopt to continue, or the exit code the program must exit with: 0 after
  // --help / --version, kExitUsage after an error (already printed to stderr).
  std::optional<int> Parse(int argc, const char* const* argv);
  std::optional<int> Parse(const std::vector<std::string>& args);

  [[nodiscard]] std::string Usage() const;
  [[nodiscard]] const std::vector<std::string>& positional() const { return positional_; }
  [[nodiscard]] bool WasSet(std::string_view name) const;

 private:
  struct Flag {
    std::string name;
    char short_name = 0;
    std::string metavar;  // empty for boolean flags
    std::string help;
    Parser parse;
    bool is_bool = false;
    bool set = false;
  };
  Flag* Find(std::string_view name);
  Flag* FindShort(char c);
  void Add(std::string_view names, Parser parser, std::string help, std::string metavar,
           bool is_bool);
  int Fail(const std::string& message) const;

  std::string program_;
  std::string summary_;
  std::vector<Flag> flags_;
  std::optional<std::string> positional_metavar_;
  std::vector<std::string> positional_;
};

}  // namespace skiff
