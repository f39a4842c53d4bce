package registry

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/cli/cli/config"
	"github.com/google/go-containerregistry/pkg/authn"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/minibuild/minibuild/store"
)

// dirKeychain reads credentials from one docker config dir, as
// authn.DefaultKeychain does from $DOCKER_CONFIG.
type dirKeychain struct{ dir string }

func (k dirKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	cf, err := config.Load(k.dir)
	if err != nil {
		return nil, err
	}
	ac, err := cf.GetAuthConfig(r.RegistryStr())
	if err != nil || ac.Username == "" {
		return authn.Anonymous, err
	}
	return authn.FromConfig(authn.AuthConfig{Username: ac.Username, Password: ac.Password}), nil
}

func TestLoginPushLogout(t *testing.T) {
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret-pw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	dir := t.TempDir()
	ctx := context.Background()

	_, err := Login(ctx, host, Credentials{Username: "alice", Password: "wrong-pw"}, dir, Options{})
	if err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), "wrong-pw") {
		t.Errorf("error shows the password: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		t.Error("a failed login wrote config.json")
	}

	server, err := Login(ctx, host, Credentials{Username: "alice", Password: "s3cret-pw"}, dir, Options{})
	if err != nil || server != host {
		t.Fatalf("login: %q %v", server, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if !strings.Contains(string(b), `"`+host+`"`) {
		t.Errorf("config.json has no auths entry for %s:\n%s", host, b)
	}

	s, _ := store.Open(t.TempDir())
	img, _ := random.Image(128, 1)
	opts := Options{Keychain: dirKeychain{dir}}
	if _, err := Push(ctx, s, img, host+"/private:1", opts); err != nil {
		t.Fatalf("push with stored credentials: %v", err)
	}
	if _, _, err := Pull(ctx, s, host+"/private:1", opts); err != nil {
		t.Fatalf("pull with stored credentials: %v", err)
	}
	// Nothing in the store names the password.
	filepath.Walk(s.Root(), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if c, _ := os.ReadFile(p); strings.Contains(string(c), "s3cret-pw") {
				t.Errorf("%s contains the password", p)
			}
		}
		return nil
	})

	if _, err := Logout(host, dir); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "config.json"))
	if strings.Contains(string(b), host) {
		t.Errorf("config.json still names %s after logout:\n%s", host, b)
	}
	if _, err := Push(ctx, s, img, host+"/private:2", opts); err == nil {
		t.Error("push after logout succeeded")
	}
}
