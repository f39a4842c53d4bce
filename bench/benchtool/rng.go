package main

import (
	"encoding/binary"
	"hash/fnv"
	"math"
)

// rng is splitmix64 (Steele, Lea, Flood 2014), written out here so that the
// generated contexts never change with a Go release's math/rand.
type rng struct{ state uint64 }

// newRNG seeds a generator from a name.
func newRNG(seed string) *rng {
	h := fnv.New64a()
	h.Write([]byte(seed))
	return &rng{state: h.Sum64()}
}

func (r *rng) uint64() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// between returns an integer in [lo, hi].
func (r *rng) between(lo, hi int) int {
	return lo + int(r.uint64()%uint64(hi-lo+1))
}

// float returns a float64 in [0, 1).
func (r *rng) float() float64 {
	return float64(r.uint64()>>11) / (1 << 53)
}

// lognormal returns exp(mu + sigma·N(0,1)), N drawn by Box–Muller.
func (r *rng) lognormal(mu, sigma float64) float64 {
	u1, u2 := 1-r.float(), r.float()
	n := math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
	return math.Exp(mu + sigma*n)
}

// fill fills b with pseudo-random bytes.
func (r *rng) fill(b []byte) {
	var w [8]byte
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(w[:], r.uint64())
		copy(b[i:], w[:])
	}
}
