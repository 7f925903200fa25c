#include "common/flags.h"

#include <charconv>
#include <cstdio>
#include <iostream>

#include "common/duration.h"
#include "common/version.h"

namespace skiff {

FlagSet::FlagSet(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

void FlagSet::Add(std::string_view names, Parser parser, std::string help, std::string metavar,
                  bool is_bool) {
  Flag flag;
  auto comma = names.find(',');
  flag.name = std::string(names.substr(0, comma));
  if (comma != std::string_view::npos && comma + 1 < names.size()) {
    flag.short_name = names[comma + 1];
  }
  flag.parse = std::move(parser);
  flag.help = std::move(help);
  flag.metavar = std::move(metavar);
  flag.is_bool = is_bool;
  flags_.push_back(std::move(flag));
}

void FlagSet::AddString(std::string_view names, std::string* target, std::string help,
                        std::string metavar) {
  Add(
      names,
      [target](std::string_view v) -> std::optional<std::string> {
        *target = std::string(v);
        return std::nullopt;
      },
      std::move(help), std::move(metavar), false);
}

void FlagSet::AddStringList(std::string_view names, std::vector<std::string>* target,
                            std::string help, std::string metavar) {
  Add(
      names,
      [target](std::string_view v) -> std::optional<std::string> {
        target->emplace_back(v);
        return std::nullopt;
      },
      std::move(help), std::move(metavar), false);
}

void FlagSet::AddInt(std::string_view names, int64_t* target, int64_t min, int64_t max,
                     std::string help) {
  Add(
      names,
      [target, min, max](std::string_view v) -> std::optional<std::string> {
        int64_t parsed = 0;
        auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), parsed);
        if (ec != std::errc() || ptr != v.data() + v.size() || v.empty()) {
          return "expected an integer";
        }
        if (parsed < min || parsed > max) {
          return "must be between " + std::to_string(min) + " and " + std::to_string(max);
        }
        *target = parsed;
        return std::nullopt;
      },
      std::move(help), "N", false);
}

void FlagSet::AddBool(std::string_view names, bool* target, std::string help) {
  Add(
      names,
      [target](std::string_view v) -> std::optional<std::string> {
        if (v == "true" || v == "1" || v == "yes") {
          *target = true;
        } else if (v == "false" || v == "0" || v == "no") {
          *target = false;
        } else {
          return "expected true or false";
        }
        return std::nullopt;
      },
      std::move(help), "", true);
}

void FlagSet::AddDuration(std::string_view names, std::chrono::milliseconds* target,
                          std::string help) {
  Add(
      names,
      [target](std::string_view v) -> std::optional<std::string> {
        auto d = ParseDuration(v);
        if (!d) {
          return "expected a duration such as 100ms, 2s or 1m30s";
        }
        if (d->count() < 0) {
          return "must not be negative";
        }
        *target = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
        return std::nullopt;
      },
      std::move(help), "DURATION", false);
}

void FlagSet::AddCustom(std::string_view names, Parser parser, std::string help,
                        std::string metavar) {
  Add(names, std::move(parser), std::move(help), std::move(metavar), false);
}

FlagSet::Flag* FlagSet::Find(std::string_view name) {
  for (auto& f : flags_) {
    if (f.name == name) {
      return &f;
    }
  }
  return nullptr;
}

FlagSet::Flag* FlagSet::FindShort(char c) {
  for (auto& f : flags_) {
    if (f.short_name != 0 && f.short_name == c) {
      return &f;
    }
  }
  return nullptr;
}

bool FlagSet::WasSet(std::string_view name) const {
  for (const auto& f : flags_) {
    if (f.name == name) {
      return f.set;
    }
  }
  return false;
}

int FlagSet::Fail(const std::string& message) const {
  std::cerr << program_ << ": " << message << "\nTry '" << program_ << " --help'.\n";
  return kExitUsage;
}

std::string FlagSet::Usage() const {
  std::string out = "Usage: " + program_ + " [flags]";
  if (positional_metavar_) {
    out += " " + *positional_metavar_;
  }
  out += "\n\n" + summary_ + "\n\nFlags:\n";
  auto line = [&out](const std::string& left, const std::string& help) {
    std::string l = "  " + left;
    if (l.size() < 30) {
      l.append(30 - l.size(), ' ');
    } else {
      l += "\n" + std::string(30, ' ');
    }
    out += l + help + "\n";
  };
  for (const auto& f : flags_) {
    std::string left = f.short_name ? std::string("-") + f.short_name + ", " : "";
    left += "--" + f.name;
    if (!f.is_bool) {
      left += " " + f.metavar;
    }
    line(left, f.help);
  }
  line("-h, --help", "print this help and exit");
  line("--version", "print the version and exit");
  return out;
}

std::optional<int> FlagSet::Parse(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    args.emplace_back(argv[i]);
  }
  return Parse(args);
}

std::optional<int> FlagSet::Parse(const std::vector<std::string>& args) {
  bool only_positional = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-') {
      if (!positional_metavar_) {
        return Fail("unexpected argument '" + arg + "'");
      }
      positional_.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    if (arg == "--help" || arg == "-h") {
      std::cout << Usage();
      return 0;
    }
    if (arg == "--version") {
      std::cout << program_ << " " << kVersion << "\n";
      return 0;
    }
    Flag* flag = nullptr;
    std::optional<std::string> value;
    std::string shown;
    if (arg.rfind("--", 0) == 0) {
      std::string body = arg.substr(2);
      auto eq = body.find('=');
      std::string name = body.substr(0, eq);
      if (eq != std::string::npos) {
        value = body.substr(eq + 1);
      }
      shown = "--" + name;
      flag = Find(name);
    } else {
      shown = arg.substr(0, 2);
      flag = arg.size() == 2 ? FindShort(arg[1]) : nullptr;
    }
    if (flag == nullptr) {
      return Fail("unknown flag '" + shown + "'");
    }
    if (!value) {
      if (flag->is_bool) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return Fail("flag '" + shown + "' needs a value (" + flag->metavar + ")");
      }
    }
    if (auto err = flag->parse(*value)) {
      return Fail("invalid value '" + *value + "' for flag '" + shown + "': " + *err);
    }
    flag->set = true;
  }
  return std::nullopt;
}

}  // namespace skiff
