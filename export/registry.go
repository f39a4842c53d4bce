package export

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/minibuild/minibuild/registry"
	"github.com/minibuild/minibuild/store"
)

// BlobEvent reports one blob of a push or a pull. It is registry's event
// under a name commands can use without importing the protocol package.
type BlobEvent = registry.Event

// The states a BlobEvent reports.
const (
	StatusExists      = registry.StatusExists      // already there, not transferred
	StatusDownloading = registry.StatusDownloading // pull started
	StatusDone        = registry.StatusDone        // pulled, verified and stored
	StatusPushing     = registry.StatusPushing     // upload started
	StatusPushed      = registry.StatusPushed      // uploaded
	StatusMounted     = registry.StatusMounted     // cross-repo mounted
)

// Registry is how minibuild reaches registries: the build's pushes and
// cache transfers, and the push, pull, login and logout commands.
type Registry struct {
	Insecure []string        // registry hosts spoken to over plain http
	Progress func(BlobEvent) // blob progress; nil reports nothing
}

func (r Registry) options() registry.Options {
	return registry.Options{Insecure: r.Insecure, Progress: r.Progress}
}

// Push uploads img to ref: a blob the registry has is skipped, one another
// repository of the registry holds is mounted (a remote layer too: it is
// not downloaded), the rest are uploaded (a remote layer fetched first).
func (r Registry) Push(ctx context.Context, st *store.Store, img v1.Image, ref string) (v1.Hash, error) {
	r.FetchRemote(ctx, st)
	return registry.Push(ctx, st, img, ref, r.options())
}

// FetchRemote lets st fetch its remote layers (store.RemoteBlob: lazy
// cache hits) through r when something reads them: a rootfs, an output,
// save, a push or a cache export elsewhere. Credentials are docker's, as
// for pull and push; each fetch is verified before it is stored.
func (r Registry) FetchRemote(ctx context.Context, st *store.Store) {
	st.SetFetcher(registry.NewFetcher(ctx, r.options()))
}

// Pull fetches ref (linux/amd64) into the store, downloading only the
// layers it lacks, and returns the stored image and its manifest digest.
func (r Registry) Pull(ctx context.Context, st *store.Store, ref string) (v1.Image, v1.Hash, error) {
	return registry.Pull(ctx, st, ref, r.options())
}

// Login checks the credentials against host and stores them in docker's
// credential store; it returns the server address they were stored under.
func (r Registry) Login(ctx context.Context, host, username, password string) (string, error) {
	return registry.Login(ctx, host, registry.Credentials{Username: username, Password: password}, "", r.options())
}

// Logout removes host's credentials from docker's credential store.
func Logout(host string) (string, error) { return registry.Logout(host, "") }
