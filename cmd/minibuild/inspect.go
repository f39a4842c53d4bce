package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/template"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/store"
)

// inspectJSON is what inspect prints without --format: the ids, the tags,
// the manifest and the whole config file.
type inspectJSON struct {
	ID       string         `json:"Id"`
	Digest   string         `json:"Digest"`
	RepoTags []string       `json:"RepoTags"`
	Manifest *v1.Manifest   `json:"Manifest"`
	Config   *v1.ConfigFile `json:"Config"`
	// RemoteLayers are the layers not stored here (lazy cache hits):
	// digest, size, diffID and the registry repository that holds them.
	RemoteLayers []store.RemoteBlob `json:"RemoteLayers,omitempty"`
}

// inspectView is what --format templates see: docker's `image inspect`
// field names (.Id, .RepoTags, .Created, .Architecture, .Os, .Config.Env,
// .RootFS.Layers, …) plus minibuild's .Digest, .Manifest and .History.
type inspectView struct {
	Id           string //nolint:revive // docker's name
	Digest       string
	RepoTags     []string
	Created      string
	Architecture string
	Os           string
	Variant      string `json:",omitempty"`
	Author       string `json:",omitempty"`
	Config       v1.Config
	RootFS       struct {
		Type   string
		Layers []string
	}
	Size     int64
	History  []v1.History
	Manifest *v1.Manifest
	// RemoteLayers: the layers not stored here (inspectJSON.RemoteLayers).
	RemoteLayers []store.RemoteBlob
}

func newInspectView(in inspectJSON) inspectView {
	cf, m := in.Config, in.Manifest
	v := inspectView{Id: in.ID, Digest: in.Digest, RepoTags: in.RepoTags, Created: cf.Created.UTC().Format("2006-01-02T15:04:05.999999999Z07:00"),
		Architecture: cf.Architecture, Os: cf.OS, Variant: cf.Variant, Author: cf.Author, Config: cf.Config, History: cf.History, Manifest: m,
		RemoteLayers: in.RemoteLayers}
	v.RootFS.Type = cf.RootFS.Type
	for _, d := range cf.RootFS.DiffIDs {
		v.RootFS.Layers = append(v.RootFS.Layers, d.String())
	}
	for _, l := range m.Layers {
		v.Size += l.Size
	}
	if v.RepoTags == nil {
		v.RepoTags = []string{}
	}
	return v
}

// templateFuncs are docker's --format helpers.
var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join":  strings.Join,
	"split": strings.Split,
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"println": func(a ...any) string {
		return fmt.Sprintln(a...)
	},
}

// writeFormatted executes a docker-style Go template over the view, with
// a newline after it, as docker does.
func writeFormatted(w io.Writer, format string, in inspectJSON) error {
	t, err := template.New("format").Funcs(templateFuncs).Option("missingkey=error").Parse(format)
	if err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, newInspectView(in)); err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	_, err = fmt.Fprintln(w, b.String())
	return err
}

func newInspectCommand(g *globalOptions) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect [--format TEMPLATE] IMAGE",
		Short: "Print an image's id, digest, manifest and config as JSON, or through a Go template",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := inspectImage(g, args[0])
			if err != nil {
				return err
			}
			if format != "" {
				return writeFormatted(cmd.OutOrStdout(), format, in)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(in)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Go template over docker's inspect fields, e.g. '{{.Id}}' or '{{json .Config.Env}}'")
	return cmd
}

// inspectImage reads what inspect shows about ref.
func inspectImage(g *globalOptions, ref string) (inspectJSON, error) {
	var in inspectJSON
	st, img, err := openImage(g, ref)
	if err != nil {
		return in, err
	}
	id, err := img.ConfigName()
	if err != nil {
		return in, err
	}
	dg, err := img.Digest()
	if err != nil {
		return in, err
	}
	if in.Manifest, err = img.Manifest(); err != nil {
		return in, err
	}
	if in.Config, err = img.ConfigFile(); err != nil {
		return in, err
	}
	in.ID, in.Digest = id.String(), dg.String()
	if in.RemoteLayers, err = st.RemoteLayers(img); err != nil {
		return in, err
	}
	if infos, err := st.Images(); err == nil {
		for _, info := range infos {
			if info.Digest == dg {
				in.RepoTags = info.Tags
			}
		}
	}
	return in, nil
}
