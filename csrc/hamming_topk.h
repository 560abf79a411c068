// Bounded top-k selection for Hamming search: a max-heap of the k best (distance, id) pairs seen so
// far, ordered so that the root is the current worst. The result contract (ascending distance, ties
// by the smaller stored id, (FILL_DISTANCE, -1) fill) is defined once, in
// zkernels/binary/topk_contract.py; `better` and `merge_topk` below implement it, and kFillDistance
// is its FILL_DISTANCE (the extension exports it and a test checks the two are equal).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace zk {

constexpr int32_t kFillDistance = std::numeric_limits<int32_t>::max();

inline bool better(int32_t da, int64_t ia, int32_t db, int64_t ib) {
    return da < db || (da == db && ia < ib);
}

// The heap does not own its storage: a worker allocates one flat block for all of its queries, so
// that no allocation happens while scanning.
struct TopK {
    int32_t* d = nullptr;
    int64_t* id = nullptr;
    int cap = 0;   // k, capped at the database size
    int size = 0;
    // Distances above `thresh` can never enter; the scan loop tests this cheaply before calling push.
    // While the heap is not full every distance may enter.
    int32_t thresh = kFillDistance;

    void push(int32_t dist, int64_t ident) {
        if (size < cap) {
            int i = size++;
            while (i > 0) {  // sift up: parent must stay the worse one
                int p = (i - 1) / 2;
                if (!better(d[p], id[p], dist, ident)) break;
                d[i] = d[p];
                id[i] = id[p];
                i = p;
            }
            d[i] = dist;
            id[i] = ident;
            if (size == cap) thresh = d[0];
            return;
        }
        if (!better(dist, ident, d[0], id[0])) return;  // equal distance but larger id: rejected
        int i = 0;
        for (;;) {  // sift down from the root, replacing the worst
            int l = 2 * i + 1, r = l + 1, w = i;
            int32_t wd = dist;
            int64_t wi = ident;
            if (l < size && better(wd, wi, d[l], id[l])) { w = l; wd = d[l]; wi = id[l]; }
            if (r < size && better(wd, wi, d[r], id[r])) { w = r; }
            if (w == i) break;
            d[i] = d[w];
            id[i] = id[w];
            i = w;
        }
        d[i] = dist;
        id[i] = ident;
        thresh = d[0];
    }
};

// Merges several heaps holding candidates for the same query into the final sorted row of k,
// filled as the contract says when fewer than k candidates exist (k > n).
inline void merge_topk(const std::vector<const TopK*>& parts, int k, int32_t* out_d, int64_t* out_i) {
    std::vector<std::pair<int32_t, int64_t>> all;
    size_t total = 0;
    for (const TopK* h : parts) total += h->size;
    all.reserve(total);
    for (const TopK* h : parts)
        for (int j = 0; j < h->size; ++j) all.emplace_back(h->d[j], h->id[j]);
    size_t keep = std::min<size_t>(all.size(), (size_t)k);
    std::partial_sort(all.begin(), all.begin() + keep, all.end());  // pair order = (distance, id)
    for (size_t j = 0; j < keep; ++j) {
        out_d[j] = all[j].first;
        out_i[j] = all[j].second;
    }
    for (size_t j = keep; j < (size_t)k; ++j) {
        out_d[j] = kFillDistance;
        out_i[j] = -1;
    }
}

}  // namespace zk
