package executor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/store"
)

// imageState is a stage's image as its steps change it: the layer chain,
// the config and the history.
type imageState struct {
	layers []layer.Descriptor
	config v1.ConfigFile
	// cmdSet records a CMD in this stage, so that a later ENTRYPOINT keeps
	// it (docker resets only an inherited CMD).
	cmdSet bool
}

// stateFromImage loads a base image's layers and config.
func stateFromImage(img v1.Image) (*imageState, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("read base manifest: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read base config: %w", err)
	}
	pairs, err := layer.Pairs(m, cf)
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	st := &imageState{config: *cf.DeepCopy()}
	for _, p := range pairs {
		st.layers = append(st.layers, p.Descriptor())
	}
	return st, nil
}

// scratchState is the empty image FROM scratch starts with.
func scratchState() *imageState {
	return &imageState{config: v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Config:       v1.Config{Env: []string{"PATH=" + defaultPath}},
	}}
}

// defaultPath is docker's PATH for images that set none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func (s *imageState) clone() *imageState {
	return &imageState{layers: append([]layer.Descriptor(nil), s.layers...), config: *s.config.DeepCopy(), cmdSet: s.cmdSet}
}

// apply replays a step's record: its layer, config and history.
func (s *imageState) apply(r *cache.Record) {
	if r.Layer != nil {
		s.layers = append(s.layers, *r.Layer)
	}
	s.config.Config = *r.Config.DeepCopy()
	s.config.History = append(s.config.History, r.History)
}

// commit writes the image's config and manifest into the store and
// returns the stored image. created is the image's creation time.
func commit(st *store.Store, s *imageState, created time.Time) (v1.Image, v1.Hash, error) {
	cf := *s.config.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: created.UTC()}
	cf.RootFS = v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{}}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Layers: []v1.Descriptor{}}
	for _, l := range s.layers {
		desc, diffID, err := l.V1()
		if err != nil {
			return nil, v1.Hash{}, err
		}
		cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, diffID)
		m.Layers = append(m.Layers, desc)
	}
	rawConfig, err := json.Marshal(cf)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	cfgHash, cfgSize, err := v1.SHA256(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, v1.Hash{}, err
	}
	m.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Size: cfgSize, Digest: cfgHash}
	rawManifest, err := json.Marshal(m)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	img, h, err := st.CommitImage(rawConfig, rawManifest)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("store image: %w", err)
	}
	return img, h, nil
}
