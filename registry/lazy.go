package registry

import (
	"context"
	"errors"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/minibuild/minibuild/store"
)

// NewFetcher is how a store fetches its remote blobs (store.RemoteBlob,
// recorded by a lazy cache hit) when something reads them: from the
// record's repository with opts' credentials (the docker config, as pull
// and push), checked against the record's digest, size and diffID before
// the blob is committed (FetchLayer). ctx bounds every fetch.
func NewFetcher(ctx context.Context, opts Options) store.Fetcher {
	return fetcher{ctx: ctx, opts: opts}
}

type fetcher struct {
	ctx  context.Context
	opts Options
}

// FetchRemote implements store.Fetcher.
func (f fetcher) FetchRemote(s *store.Store, rb store.RemoteBlob) error {
	h, err := v1.NewHash(rb.Digest.String())
	if err != nil {
		return err
	}
	d := v1.Descriptor{Digest: h, Size: rb.Size, MediaType: types.MediaType(rb.MediaType)}
	err = FetchLayer(f.ctx, s, rb.Repo, d, rb.DiffID, f.opts)
	if inner := errors.Unwrap(err); inner != nil {
		err = inner // the store's error names the blob and the repository already
	}
	return err
}
