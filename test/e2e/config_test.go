package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// The image config and history as docker writes them.
func TestConfigAndHistory(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, `FROM busybox
ENV A=1 B="two words"
LABEL org.example.team=build "com.example.note"="hi there"
EXPOSE 8080 53/udp
VOLUME ["/data", "/cache"]
WORKDIR /work
RUN echo built > /work/built.txt
USER app
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD wget -q -O- http://localhost:8080/ || exit 1
CMD ["serve", "--port", "8080"]
`, nil)
	epoch := []string{"SOURCE_DATE_EPOCH=1700000000"}
	ociTar := filepath.Join(t.TempDir(), "cfg.oci.tar")
	e.build(ctx, epoch, "-t", "cfg:1", "--label", "from.flag=yes", "-o", "type=oci,dest="+ociTar)
	e.build(ctx, epoch, "-t", "cfg:1", "--label", "from.flag=yes")

	cfg := imageConfig(t, decodeJSON(t, "inspect cfg:1", e.ok("inspect", "cfg:1").stdout))
	env := strs(field(cfg, "Env"))
	for _, want := range []string{"A=1", "B=two words"} {
		if !slicesContains(env, want) {
			t.Errorf("Env %q lacks %q", env, want)
		}
	}
	checks := []struct {
		name string
		got  any
		want string
	}{
		{"Cmd", strs(field(cfg, "Cmd")), "[serve --port 8080]"},
		{"Entrypoint", strs(field(cfg, "Entrypoint")), "[]"},
		{"WorkingDir", field(cfg, "WorkingDir"), "/work"},
		{"User", field(cfg, "User"), "app"},
		{"ExposedPorts", keys(field(cfg, "ExposedPorts")), "[53/udp 8080/tcp]"},
		{"Volumes", keys(field(cfg, "Volumes")), "[/cache /data]"},
		{"StopSignal", field(cfg, "StopSignal"), "SIGTERM"},
	}
	for _, c := range checks {
		if got := fmt.Sprint(c.got); got != c.want {
			t.Errorf("config %s = %s, want %s", c.name, got, c.want)
		}
	}
	labels, _ := field(cfg, "Labels").(map[string]any)
	for k, v := range map[string]string{"org.example.team": "build", "com.example.note": "hi there", "from.flag": "yes"} {
		if labels[k] != v {
			t.Errorf("label %s = %v, want %q (labels %v)", k, labels[k], v, labels)
		}
	}
	hc, _ := field(cfg, "Healthcheck").(map[string]any)
	if got := strs(field(hc, "Test")); strings.Join(got, "|") != "CMD-SHELL|wget -q -O- http://localhost:8080/ || exit 1" {
		t.Errorf("Healthcheck.Test = %q", got)
	}
	for k, want := range map[string]float64{"Interval": 30e9, "Timeout": 5e9, "Retries": 3} {
		if got, _ := field(hc, k).(float64); got != want {
			t.Errorf("Healthcheck.%s = %v, want %v", k, field(hc, k), want)
		}
	}

	// History and created, from the exported config itself.
	raw := decodeJSON(t, "raw config", tool(t, "skopeo", "inspect", "--raw", "--config", "oci-archive:"+ociTar))
	top, _ := raw.(map[string]any)
	if got := top["created"]; got != "2023-11-14T22:13:20Z" {
		t.Errorf("created = %v, want 2023-11-14T22:13:20Z from SOURCE_DATE_EPOCH", got)
	}
	hist, _ := top["history"].([]any)
	rootfs, _ := top["rootfs"].(map[string]any)
	diffIDs := strs(rootfs["diff_ids"])
	nonEmpty := 0
	for _, h := range hist {
		if m, _ := h.(map[string]any); m["empty_layer"] != true {
			nonEmpty++
		}
	}
	if nonEmpty != len(diffIDs) {
		t.Errorf("%d history entries with a layer, %d layers", nonEmpty, len(diffIDs))
	}
	own := []struct {
		keyword string
		empty   int // 1 empty_layer, 0 a layer, -1 either
	}{
		{"ENV", 1}, {"LABEL", 1}, {"EXPOSE", 1}, {"VOLUME", 1}, {"WORKDIR", -1}, {"RUN", 0},
		{"USER", 1}, {"STOPSIGNAL", 1}, {"HEALTHCHECK", 1}, {"CMD", 1},
	}
	if len(hist) < len(own) {
		t.Fatalf("history has %d entries, the Dockerfile alone has %d instructions after FROM: %v", len(hist), len(own), hist)
	}
	tailHist := hist[len(hist)-len(own):]
	for i, want := range own {
		m, _ := tailHist[i].(map[string]any)
		createdBy, _ := m["created_by"].(string)
		if !strings.Contains(createdBy, want.keyword) {
			t.Errorf("history[%d].created_by = %q, want the %s instruction", len(hist)-len(own)+i, createdBy, want.keyword)
		}
		if want.empty >= 0 && (m["empty_layer"] == true) != (want.empty == 1) {
			t.Errorf("history %q: empty_layer = %v", createdBy, m["empty_layer"])
		}
		if m["created"] != "2023-11-14T22:13:20Z" {
			t.Errorf("history %q: created = %v, want the SOURCE_DATE_EPOCH time", createdBy, m["created"])
		}
	}

	// ENTRYPOINT resets an inherited CMD, but not one set in the same stage.
	reset := project(t, "FROM cfg:1\nENTRYPOINT [\"/bin/echo\"]\n", nil)
	e.build(reset, nil, "-t", "cfg:reset")
	c := imageConfig(t, decodeJSON(t, "inspect cfg:reset", e.ok("inspect", "cfg:reset").stdout))
	if got := strs(field(c, "Cmd")); len(got) != 0 {
		t.Errorf("ENTRYPOINT after an inherited CMD: Cmd = %q, want none", got)
	}
	if got := strs(field(c, "Entrypoint")); fmt.Sprint(got) != "[/bin/echo]" {
		t.Errorf("Entrypoint = %q", got)
	}
	if got := strs(field(c, "Env")); !slicesContains(got, "A=1") {
		t.Errorf("the child lost the inherited Env: %q", got)
	}
	keep := project(t, "FROM cfg:1\nCMD [\"x\"]\nENTRYPOINT [\"/bin/echo\"]\n", nil)
	e.build(keep, nil, "-t", "cfg:keep")
	c = imageConfig(t, decodeJSON(t, "inspect cfg:keep", e.ok("inspect", "cfg:keep").stdout))
	if got := strs(field(c, "Cmd")); fmt.Sprint(got) != "[x]" {
		t.Errorf("CMD set in the same stage before ENTRYPOINT: Cmd = %q, want [x]", got)
	}
	shell := project(t, "FROM busybox\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN echo shell-form > /s.txt\nONBUILD RUN echo child\n", nil)
	e.build(shell, nil, "-t", "cfg:shell")
	c = imageConfig(t, decodeJSON(t, "inspect cfg:shell", e.ok("inspect", "cfg:shell").stdout))
	if got := strs(field(c, "Shell")); fmt.Sprint(got) != "[/bin/sh -ec]" {
		t.Errorf("Shell = %q", got)
	}
	if got := strs(field(c, "OnBuild")); fmt.Sprint(got) != "[RUN echo child]" {
		t.Errorf("OnBuild = %q", got)
	}
}
