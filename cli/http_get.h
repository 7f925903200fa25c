#pragma once
// A minimal blocking HTTP/1.1 GET for skiffctl (a proxy's admin port answers one request
// per connection and closes it).
#include <string>

namespace skiff::cli {

// GET http://HOST:PORT/path. True with the status and body; false with `error` ("cannot
// connect to 127.0.0.1:15000: Connection refused"). `address` is HOST:PORT or [V6]:PORT.
bool HttpGet(const std::string& address, const std::string& path, int* status, std::string* body,
             std::string* error);

}  // namespace skiff::cli
