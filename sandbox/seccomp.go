package sandbox

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The seccomp filter is docker's default profile (moby/profiles
// seccomp/default.json) as classic BPF, assembled here rather than by
// libseccomp: libseccomp-golang needs cgo and a shared libseccomp, and
// minibuild is one static binary that runs FROM scratch. The program is
// small enough to read: check the arch, allow the listed syscalls, apply
// the four argument rules, return EPERM (the profile's defaultErrnoRet)
// for everything else.

// Offsets into struct seccomp_data: nr, arch, then six 64-bit args
// (little-endian: the low word first).
const (
	seccompNr   = 0
	seccompArg0 = 16
	x32Bit      = 0x40000000 // __X32_SYSCALL_BIT: the x32 ABI's numbers
)

// cloneNamespaceFlags are the clone flags the profile refuses without
// CAP_SYS_ADMIN (its mask 2114060288): CLONE_NEWNS, NEWUTS, NEWIPC,
// NEWUSER, NEWPID, NEWNET and NEWCGROUP.
const cloneNamespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// personalities are the personality(2) arguments the profile allows:
// PER_LINUX, UNAME26, ADDR_NO_RANDOMIZE (and with UNAME26), and the query.
var personalities = []uint32{0x0, 0x8, 0x20000, 0x20008, 0xffffffff}

// bpfProgram is a classic BPF program under assembly.
type bpfProgram []unix.SockFilter

func (p *bpfProgram) stmt(code uint16, k uint32) {
	*p = append(*p, unix.SockFilter{Code: code, K: k})
}

func (p *bpfProgram) jump(code uint16, k uint32, jt, jf uint8) {
	*p = append(*p, unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k})
}

func (p *bpfProgram) load(off uint32)   { p.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, off) }
func (p *bpfProgram) ret(action uint32) { p.stmt(unix.BPF_RET|unix.BPF_K, action) }

// jeq jumps jt instructions ahead when A == k, else jf.
func (p *bpfProgram) jeq(k uint32, jt, jf uint8) {
	p.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, k, jt, jf)
}

// rule emits the body for syscall nr: skipped unless A == nr. body must
// end in a return, as it may reload A.
func (p *bpfProgram) rule(nr uintptr, body bpfProgram) {
	p.jeq(uint32(nr), 0, uint8(len(body)))
	*p = append(*p, body...)
}

var (
	retAllow = uint32(unix.SECCOMP_RET_ALLOW)
	retEPERM = uint32(unix.SECCOMP_RET_ERRNO) | uint32(unix.EPERM)
)

// seccompFilter assembles the profile.
func seccompFilter() (bpfProgram, error) {
	if len(seccompAllowed) == 0 {
		return nil, errors.New("seccomp: docker's default profile is transcribed for amd64 only")
	}
	var p bpfProgram
	// A foreign arch (i386, via int 0x80) numbers syscalls differently:
	// none of the allow-list applies, so everything is refused.
	p.load(4)
	p.jeq(seccompArch, 1, 0)
	p.ret(retEPERM)
	p.load(seccompNr)
	p.jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, x32Bit, 0, 1)
	p.ret(retEPERM)
	for _, nr := range seccompAllowed {
		p.jeq(uint32(nr), 0, 1)
		p.ret(retAllow)
	}
	p.rule(unix.SYS_CLONE, cloneRule())
	// clone3 passes its flags in memory BPF cannot read: ENOSYS, so libc
	// falls back to clone, whose flags it can.
	p.rule(unix.SYS_CLONE3, bpfProgram{{Code: unix.BPF_RET | unix.BPF_K, K: uint32(unix.SECCOMP_RET_ERRNO) | uint32(unix.ENOSYS)}})
	p.rule(unix.SYS_PERSONALITY, personalityRule())
	p.rule(unix.SYS_SOCKET, socketRule())
	p.ret(retEPERM)
	if len(p) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp: filter of %d instructions is too long", len(p))
	}
	return p, nil
}

// cloneRule allows clone without namespace flags (the low word holds them
// all; the high word is unconstrained, as the profile's 32-bit mask says).
func cloneRule() bpfProgram {
	var b bpfProgram
	b.load(seccompArg0)
	b.jump(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, cloneNamespaceFlags, 1, 0)
	b.ret(retAllow)
	b.ret(retEPERM)
	return b
}

// personalityRule allows the listed 64-bit values (high word zero).
func personalityRule() bpfProgram {
	var b bpfProgram
	b.load(seccompArg0 + 4)
	b.jeq(0, 1, 0)
	b.ret(retEPERM)
	b.load(seccompArg0)
	n := len(personalities)
	for i, v := range personalities {
		b.jeq(v, uint8(n-i), 0) // to the allow after the last jeq and the EPERM
	}
	b.ret(retEPERM)
	b.ret(retAllow)
	return b
}

// socketRule allows every domain but AF_ALG (38) and AF_VSOCK (40): the
// profile's arg0 < 38, == 39, > 40, compared as 64-bit values.
func socketRule() bpfProgram {
	var b bpfProgram
	b.load(seccompArg0 + 4)
	b.jeq(0, 0, 3) // high word set: > 40
	b.load(seccompArg0)
	b.jeq(unix.AF_ALG, 2, 0)
	b.jeq(unix.AF_VSOCK, 1, 0)
	b.ret(retAllow)
	b.ret(retEPERM)
	return b
}

// loadSeccomp installs the filter on the calling thread, which must be the
// one that forks the command (the child inherits it; the init's other
// threads stay unfiltered, and none of them runs the command). Without
// no_new_privs this needs CAP_SYS_ADMIN, which the init still has.
func loadSeccomp() error {
	p, err := seccompFilter()
	if err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(p)), Filter: &p[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		return fmt.Errorf("load seccomp filter: %w", err)
	}
	return nil
}
