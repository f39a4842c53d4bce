package executor

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/minibuild/minibuild/cache"
)

// metadataOp is an instruction that changes only the image config (ENV,
// LABEL, CMD, USER, …, and ARG, which changes nothing at all): its key is
// its expanded text, and it adds no layer.
type metadataOp struct{ s *step }

func (o *metadataOp) inputs(*cache.Inputs) {}
func (o *metadataOp) release()             {}

func (o *metadataOp) execute(context.Context) (*cache.Record, error) {
	next := o.s.config()
	author, err := o.apply(&next)
	if err != nil {
		return nil, err
	}
	h := o.s.history("", true)
	h.Author = author
	return &cache.Record{Config: next, History: h}, nil
}

// apply applies the instruction to cfg; MAINTAINER returns the author.
func (o *metadataOp) apply(cfg *v1.Config) (author string, err error) {
	switch c := o.s.cmd.(type) {
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			cfg.Env = setEnv(cfg.Env, kv.Key, kv.Value)
		}
	case *instructions.LabelCommand:
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		for _, kv := range c.Labels {
			cfg.Labels[kv.Key] = kv.Value
		}
	case *instructions.ExposeCommand:
		return "", exposePorts(cfg, c.Ports)
	case *instructions.UserCommand:
		cfg.User = c.User
	case *instructions.VolumeCommand:
		if cfg.Volumes == nil {
			cfg.Volumes = map[string]struct{}{}
		}
		for _, v := range c.Volumes {
			if v == "" {
				return "", fmt.Errorf("VOLUME specified can not be an empty string")
			}
			cfg.Volumes[v] = struct{}{}
		}
	case *instructions.CmdCommand:
		cfg.Cmd = withShell(cfg, c.ShellDependantCmdLine)
	case *instructions.EntrypointCommand:
		cfg.Entrypoint = withShell(cfg, c.ShellDependantCmdLine)
		if !o.s.run.state.cmdSet {
			cfg.Cmd = nil // docker resets only an inherited CMD
		}
	case *instructions.ShellCommand:
		cfg.Shell = append([]string(nil), c.Shell...)
	case *instructions.StopSignalCommand:
		cfg.StopSignal = c.Signal
	case *instructions.HealthCheckCommand:
		h := c.Health
		cfg.Healthcheck = &v1.HealthConfig{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
	case *instructions.OnbuildCommand:
		cfg.OnBuild = append(cfg.OnBuild, c.Expression)
	case *instructions.MaintainerCommand:
		return c.Maintainer, nil
	case *instructions.ArgCommand:
		// ARGs change the scope (done in prepare), never the config.
	default:
		return "", fmt.Errorf("instruction %s is not supported", strings.ToUpper(o.s.cmd.Name()))
	}
	return "", nil
}

// exposePorts adds EXPOSE's ports to the config.
func exposePorts(cfg *v1.Config, specs []string) error {
	if cfg.ExposedPorts == nil {
		cfg.ExposedPorts = map[string]struct{}{}
	}
	for _, p := range specs {
		ports, err := expandPorts(p)
		if err != nil {
			return err
		}
		for _, port := range ports {
			cfg.ExposedPorts[port] = struct{}{}
		}
	}
	return nil
}

// expandPorts turns "80", "80/udp" or "8000-8002/tcp" into docker's
// "PORT/PROTO" keys.
func expandPorts(spec string) ([]string, error) {
	portPart, proto, ok := strings.Cut(spec, "/")
	if !ok {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	lo, hi, isRange := strings.Cut(portPart, "-")
	start, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("invalid port %q", spec)
	}
	end := start
	if isRange {
		if end, err = strconv.ParseUint(hi, 10, 16); err != nil || end < start {
			return nil, fmt.Errorf("invalid port range %q", spec)
		}
	}
	var out []string
	for p := start; p <= end; p++ {
		out = append(out, fmt.Sprintf("%d/%s", p, proto))
	}
	return out, nil
}

// withShell prepends the image's shell to a shell-form command line.
func withShell(cfg *v1.Config, c instructions.ShellDependantCmdLine) []string {
	if !c.PrependShell {
		return append([]string(nil), c.CmdLine...)
	}
	return append(shellOf(cfg), strings.Join(c.CmdLine, " "))
}

func shellOf(cfg *v1.Config) []string {
	if len(cfg.Shell) > 0 {
		return append([]string(nil), cfg.Shell...)
	}
	return []string{"/bin/sh", "-c"}
}

// lookupEnv finds the last value of k in a K=V list.
func lookupEnv(env []string, k string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if name, v, _ := strings.Cut(env[i], "="); name == k {
			return v, true
		}
	}
	return "", false
}

// setEnv replaces k's value in place, or appends it, as docker keeps ENV order.
func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); name == k {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}
