// Job specs (YAML or JSON) from clients: parse, default, validate; never crash, and a spec that
// validates has the invariants admission relies on.
#include <cstdint>
#include <string>

#include "common/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto spec = paft::ParseJobSpec(text);
  if (!spec.ok()) return 0;
  paft::ApplyJobSpecDefaults(&*spec);
  paft::v1::JobSpec again = *spec;
  paft::ApplyJobSpecDefaults(&again);  // idempotent
  if (again.SerializeAsString() != spec->SerializeAsString()) __builtin_trap();
  if (!paft::ValidateJobSpec(*spec).ok()) return 0;
  for (const auto* b : {&spec->sft(), &spec->alignment()}) {
    if (b->world_size() < 1 || b->pool().empty() || b->dataset().path().empty()) __builtin_trap();
  }
  if (spec->base_model().empty() || spec->base_model()[0] != '/') __builtin_trap();
  return 0;
}
