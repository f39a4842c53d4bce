//go:build !amd64

package sandbox

// seccompAllowed is empty off amd64: the profile is transcribed for amd64
// only (minibuild builds linux/amd64), so seccompFilter refuses to make a
// filter that would deny everything.
var seccompAllowed [0]uintptr

const seccompArch = 0
