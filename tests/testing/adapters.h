// Comparing the PEFT adapters (fp32 adapter_model.safetensors) that two training runs wrote.
#ifndef PAFT_TESTS_TESTING_ADAPTERS_H_
#define PAFT_TESTS_TESTING_ADAPTERS_H_

#include <string>

namespace paft::testing {

// The largest |a - b| over the same-named fp32 tensors of the adapter folders `a` and `b`.
// +infinity when either cannot be read, a tensor of `a` is missing from `b`, or shapes differ.
double MaxAdapterDifference(const std::string& a, const std::string& b);

}  // namespace paft::testing

#endif  // PAFT_TESTS_TESTING_ADAPTERS_H_
