// Truncated singular value decomposition of a dense matrix, for merging adapters by SVD (PEFT's
// *_svd combination types). LAPACK's dgesdd in double precision, reduced factors.
#ifndef PAFT_MERGER_SVD_H_
#define PAFT_MERGER_SVD_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace paft::merger {

// M ~= left * right with the leading `rank` singular triplets of M = U S V^T:
// left = U[:, :rank] diag(S[:rank]) (rows x rank) and right = V^T[:rank, :] (rank x cols), both
// row-major -- PEFT's lora_B and lora_A. Singular vectors are unique up to sign (within
// distinct singular values): the sign is fixed so that each row of `right` has its
// largest-magnitude entry positive.
struct TruncatedSvd {
  std::vector<double> left;
  std::vector<double> right;
  std::vector<double> singular_values;  // all min(rows, cols) of them, descending
};

// `m` is row-major rows x cols. InvalidArgument for rank outside [1, min(rows, cols)];
// Internal when LAPACK does not converge.
absl::StatusOr<TruncatedSvd> TruncatedSvdOf(const std::vector<float>& m, int64_t rows,
                                            int64_t cols, int64_t rank);

}  // namespace paft::merger

#endif  // PAFT_MERGER_SVD_H_
