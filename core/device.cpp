#include "core/device.h"

#include "core/error.h"

namespace kiln {

Device::Device(DeviceType type, int index) : type_(type), index_(index) {
  KILN_CHECK(index >= -1, "[Device] device index must be >= 0, got ", index);
  KILN_CHECK(type != DeviceType::CPU || index <= 0, "[Device] cpu device index must be 0, got ", index);
}

Device::Device(const std::string& spec) : type_(DeviceType::CPU), index_(-1) {
  std::string kind = spec, idx;
  if (auto colon = spec.find(':'); colon != std::string::npos) {
    kind = spec.substr(0, colon);
    idx = spec.substr(colon + 1);
  }
  if (kind == "cpu") type_ = DeviceType::CPU;
  else if (kind == "cuda") type_ = DeviceType::CUDA;
  else KILN_FAIL("[Device] unknown device type '", kind, "' in '", spec, "' (expected cpu or cuda)");
  if (!idx.empty()) {
    KILN_CHECK(idx.find_first_not_of("0123456789") == std::string::npos && idx.size() < 6,
               "[Device] invalid device index '", idx, "' in '", spec, "'");
    index_ = std::stoi(idx);
    KILN_CHECK(type_ != DeviceType::CPU || index_ == 0, "[Device] cpu device index must be 0, got ", index_);
  }
}

std::string Device::str() const {
  std::string s = type_ == DeviceType::CPU ? "cpu" : "cuda";
  if (index_ >= 0 && type_ != DeviceType::CPU) s += ":" + std::to_string(index_);
  return s;
}

std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

}  // namespace kiln
