#include "merger/svd.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include "absl/strings/str_cat.h"

extern "C" {
// LAPACK (Fortran calling convention; the trailing length is gfortran's hidden one for JOBZ).
void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s,
             double* u, const int* ldu, double* vt, const int* ldvt, double* work,
             const int* lwork, int* iwork, int* info, size_t jobz_length);
}

namespace paft::merger {

absl::StatusOr<TruncatedSvd> TruncatedSvdOf(const std::vector<float>& m, int64_t rows,
                                            int64_t cols, int64_t rank) {
  const int64_t k = std::min(rows, cols);
  if (rank < 1 || rank > k) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " is outside [1, ", k,
                                                   "] for a ", rows, " x ", cols, " matrix"));
  }
  if (rows > INT_MAX || cols > INT_MAX || rows * cols > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", rows, " x ", cols, " matrix is too large for LAPACK's int sizes"));
  }
  // LAPACK is column-major: the row-major M is, to it, the cols x rows matrix X = M^T. With
  // X = U' S V'^T, M = V' S U'^T: M's left vectors are V' (the rows of VT'), its right ones U'.
  std::vector<double> x(m.begin(), m.end());
  const int xm = static_cast<int>(cols), xn = static_cast<int>(rows), kk = static_cast<int>(k);
  std::vector<double> s(static_cast<size_t>(k));
  std::vector<double> u(static_cast<size_t>(cols * k)), vt(static_cast<size_t>(k * rows));
  std::vector<int> iwork(static_cast<size_t>(8 * k));
  int info = 0, lwork = -1;
  double query = 0;
  const char jobz = 'S';
  dgesdd_(&jobz, &xm, &xn, x.data(), &xm, s.data(), u.data(), &xm, vt.data(), &kk, &query, &lwork,
          iwork.data(), &info, 1);
  if (info != 0) return absl::InternalError(absl::StrCat("dgesdd workspace query: info ", info));
  if (!(query < static_cast<double>(INT_MAX))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a ", rows, " x ", cols, " matrix needs a LAPACK workspace beyond its int sizes"));
  }
  lwork = static_cast<int>(query);
  std::vector<double> work(static_cast<size_t>(std::max(lwork, 1)));
  dgesdd_(&jobz, &xm, &xn, x.data(), &xm, s.data(), u.data(), &xm, vt.data(), &kk, work.data(),
          &lwork, iwork.data(), &info, 1);
  if (info != 0) {
    return absl::InternalError(absl::StrCat("dgesdd did not converge (info ", info, ") on a ",
                                            rows, " x ", cols, " matrix"));
  }
  // Signs fixed so the result does not depend on the LAPACK build: each right vector (row of
  // A) has its largest-magnitude entry positive (the first such on ties).
  for (int64_t j = 0; j < rank; ++j) {
    int64_t best = 0;
    for (int64_t i = 1; i < cols; ++i) {
      if (std::fabs(u[i + j * cols]) > std::fabs(u[best + j * cols])) best = i;
    }
    if (u[best + j * cols] < 0) {
      for (int64_t i = 0; i < cols; ++i) u[i + j * cols] = -u[i + j * cols];
      for (int64_t o = 0; o < rows; ++o) vt[j + o * k] = -vt[j + o * k];
    }
  }
  TruncatedSvd out;
  out.singular_values = s;
  out.left.resize(static_cast<size_t>(rows * rank));
  out.right.resize(static_cast<size_t>(rank * cols));
  for (int64_t o = 0; o < rows; ++o) {
    for (int64_t j = 0; j < rank; ++j) out.left[o * rank + j] = vt[j + o * k] * s[j];
  }
  for (int64_t j = 0; j < rank; ++j) {
    for (int64_t i = 0; i < cols; ++i) out.right[j * cols + i] = u[i + j * cols];
  }
  return out;
}

}  // namespace paft::merger
