#pragma once
// Aligned text tables for skiffctl (as kubectl and istioctl print them): every column as
// wide as its widest cell, two spaces between columns, no padding after the last one.
#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

namespace skiff::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }

  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // Printed under the row before it, not aligned (a NACK's message).
  void AddNote(std::string note) { notes_.emplace_back(rows_.size() - 1, std::move(note)); }
  [[nodiscard]] size_t rows() const { return rows_.size() - 1; }

  void Print(std::ostream& out) const {
    std::vector<size_t> width;
    for (const auto& row : rows_) {
      width.resize(std::max(width.size(), row.size()));
      for (size_t i = 0; i < row.size(); ++i) {
        width[i] = std::max(width[i], row[i].size());
      }
    }
    size_t note = 0;
    for (size_t r = 0; r < rows_.size(); ++r) {
      const auto& row = rows_[r];
      std::string line;
      for (size_t i = 0; i < row.size(); ++i) {
        line += row[i];
        if (i + 1 < row.size()) {
          line += std::string(width[i] - row[i].size() + 2, ' ');
        }
      }
      while (!line.empty() && line.back() == ' ') {
        line.pop_back();
      }
      out << line << "\n";
      for (; note < notes_.size() && notes_[note].first == r; ++note) {
        out << "  " << notes_[note].second << "\n";
      }
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<std::pair<size_t, std::string>> notes_;  // (row index, text)
};

}  // namespace skiff::cli
