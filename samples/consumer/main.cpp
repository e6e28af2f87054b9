#include <kiln/kiln.h>

#include <iostream>

int main() {
  kiln::Tensor a = kiln::arange(6, kiln::kFloat32).reshape({2, 3});
  kiln::Tensor b = (a * 2 + 1).relu();
  std::cout << b << "\n";
  return b.sum().item<float>() == 36.0f ? 0 : 1;
}
