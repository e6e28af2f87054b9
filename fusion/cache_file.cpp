#include "fusion/cache_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <random>

#include "fusion/hash.h"

namespace kiln::fusion {

FileRead read_whole_file(const std::string& path, uint64_t max_size, std::string* data) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? FileRead::Missing : FileRead::Failed;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) > max_size) {
    ::close(fd);
    return FileRead::Failed;
  }
  data->resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  bool ok = true;
  while (done < data->size()) {
    const ssize_t r = ::read(fd, data->data() + done, data->size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) ok = false;
    if (r <= 0) break;
    done += static_cast<size_t>(r);
  }
  ::close(fd);
  data->resize(done);
  return ok ? FileRead::Ok : FileRead::Failed;
}

bool write_file_atomically(const std::string& path, std::initializer_list<std::string_view> parts) {
  // pid + counter make the name unique within this machine's processes; the random suffix covers
  // processes in other pid namespaces sharing the cache directory.
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1)) + "." +
                          hex64(rng());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = true;
  for (std::string_view part : parts) {
    const char* p = part.data();
    size_t n = part.size();
    while (ok && n > 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) ok = false;
      else {
        p += w;
        n -= static_cast<size_t>(w);
      }
    }
  }
  ok = (::close(fd) == 0) && ok;
  if (ok) ok = ::rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) ::unlink(tmp.c_str());
  return ok;
}

}  // namespace kiln::fusion
