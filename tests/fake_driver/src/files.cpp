#include "files.h"

#include <fcntl.h>
#include <unistd.h>

namespace sluice::fake {

bool read_whole_file(const std::string& path, std::string& out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out.clear();
  char buffer[65536];
  for (;;) {
    ssize_t got = read(fd, buffer, sizeof(buffer));
    if (got < 0) {
      close(fd);
      return false;
    }
    if (got == 0) break;
    out.append(buffer, static_cast<std::size_t>(got));
  }
  close(fd);
  return true;
}

}  // namespace sluice::fake
