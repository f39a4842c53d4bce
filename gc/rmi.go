package gc

import (
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/store"
)

// Removal is what RemoveImages did for one argument.
type Removal struct {
	Ref      string
	Untagged []string        // display refs
	Deleted  []digest.Digest // image ids whose records went
	Err      error
}

// ErrInUse marks a refusal: the image is still needed (another tag, a
// child image) and force was not given.
var ErrInUse = errors.New("image is in use")

// RemoveImages is rmi: a tag ref untags (and, when it was the image's last
// tag, removes the image); an id, digest or id prefix removes the image,
// refusing one that still has tags or a child image (another image built
// on all of its layers) unless force. Then whatever became unreachable is
// collected (cache records stay: prune decides about those).
func RemoveImages(s *Stores, refs []string, force bool) ([]Removal, Freed, error) {
	var out []Removal
	var drop []digest.Digest
	err := s.Store.Collect(func(c *store.Collection) error {
		images := c.Images()
		for _, ref := range refs {
			r, md := removal(c, images, ref, force)
			out = append(out, r)
			if md != "" {
				drop = append(drop, md)
			}
		}
		return nil
	})
	if err != nil {
		return out, Freed{}, err
	}
	f, err := Collect(s, Policy{Remove: drop, Only: true}, false)
	return out, f, err
}

// removal resolves and untags one rmi argument; it returns the manifest
// digest of the image record to remove, if any.
func removal(c *store.Collection, images []store.ImageRecord, ref string, force bool) (Removal, digest.Digest) {
	r := Removal{Ref: ref}
	md, isTag, err := c.Resolve(ref)
	if err != nil {
		r.Err = err
		return r, ""
	}
	im := find(images, md)
	if im == nil {
		r.Err = fmt.Errorf("image %q: %w", ref, store.ErrNotFound)
		return r, ""
	}
	if isTag {
		norm, _ := store.NormalizeTag(ref)
		if r.Err = c.Untag(norm); r.Err != nil {
			return r, ""
		}
		r.Untagged = []string{store.DisplayRef(norm)}
		im.Tags = without(im.Tags, norm)
		if len(im.Tags) > 0 {
			return r, "" // another tag still needs it
		}
	} else if !force {
		if len(im.Tags) > 0 {
			r.Err = fmt.Errorf("image %s is tagged %s: %w (untag it, or use -f)", short(im.Config), displayTags(im.Tags), ErrInUse)
			return r, ""
		}
		if child := childOf(images, im); child != nil {
			r.Err = fmt.Errorf("image %s has a child image %s: %w (use -f)", short(im.Config), short(child.Config), ErrInUse)
			return r, ""
		}
	}
	// A child image names its own blobs: removing its parent's record
	// takes nothing from it.
	if !isTag {
		for _, t := range im.Tags {
			r.Untagged = append(r.Untagged, store.DisplayRef(t))
		}
		if r.Err = c.Untag(im.Tags...); r.Err != nil {
			return r, ""
		}
		im.Tags = nil
	}
	r.Deleted = []digest.Digest{im.Config}
	return r, im.Digest
}

func find(images []store.ImageRecord, md digest.Digest) *store.ImageRecord {
	for i := range images {
		if images[i].Digest == md {
			return &images[i]
		}
	}
	return nil
}

// childOf finds another image whose layers start with all of im's layers
// and go on: docker's child image.
func childOf(images []store.ImageRecord, im *store.ImageRecord) *store.ImageRecord {
	for i := range images {
		o := &images[i]
		if o.Digest == im.Digest || len(o.Layers) <= len(im.Layers) || len(im.Layers) == 0 {
			continue
		}
		prefix := true
		for j, l := range im.Layers {
			if o.Layers[j].Digest != l.Digest {
				prefix = false
				break
			}
		}
		if prefix {
			return o
		}
	}
	return nil
}

func without(list []string, s string) []string {
	var out []string
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

func displayTags(tags []string) string {
	var d []string
	for _, t := range tags {
		d = append(d, store.DisplayRef(t))
	}
	return strings.Join(d, ", ")
}

func short(d digest.Digest) string {
	if e := d.Encoded(); len(e) >= 12 {
		return e[:12]
	}
	return d.String()
}
