package peerbook

import (
	"net/netip"
	"sort"
)

// overlaps finds prefixes that overlap an earlier one, in O(n log n): a book
// with ten thousand members and their LANs must not cost n² comparisons.
//
// Two prefixes overlap exactly when one contains the other. Sorted by start
// address, widest first, the prefixes that contain the current one are a
// chain; a stack holds that chain, and whatever is left on top after popping
// the ranges that ended is the overlapping partner. Each prefix that overlaps
// anything is reported once, paired with one partner.
func overlaps(ps []netip.Prefix) [][2]int {
	order := make([]int, len(ps))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(x, y int) bool {
		a, b := ps[order[x]], ps[order[y]]
		if a.Addr().BitLen() != b.Addr().BitLen() {
			return a.Addr().BitLen() < b.Addr().BitLen()
		}
		if c := a.Masked().Addr().Compare(b.Masked().Addr()); c != 0 {
			return c < 0
		}
		return a.Bits() < b.Bits()
	})
	var pairs [][2]int
	var stack []int
	for _, i := range order {
		p := ps[i].Masked()
		for len(stack) > 0 && !ps[stack[len(stack)-1]].Masked().Contains(p.Addr()) {
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 {
			pairs = append(pairs, [2]int{stack[len(stack)-1], i})
		}
		stack = append(stack, i)
	}
	return pairs
}
