package registry

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Credentials are what login checks and stores. They are never logged,
// wrapped into errors or written anywhere but the docker credential store.
type Credentials struct {
	Username, Password string
}

// Login checks creds against the registry host ("docker.io",
// "127.0.0.1:5000") and stores them where docker and minibuild's keychain
// look: the credential helper configured in configDir/config.json, or its
// "auths" (configDir "" is docker's default, $DOCKER_CONFIG or ~/.docker).
// It returns the server address the credentials were stored under.
func Login(ctx context.Context, host string, creds Credentials, configDir string, opts Options) (string, error) {
	reg, err := registryName(host, opts.Insecure)
	if err != nil {
		return "", err
	}
	if creds.Username == "" || creds.Password == "" {
		return "", fmt.Errorf("login to %s: username and password are required", reg.RegistryStr())
	}
	if err := checkCredentials(ctx, reg, creds, opts); err != nil {
		return "", fmt.Errorf("login to %s: %w", reg.RegistryStr(), err)
	}
	cf, err := config.Load(configDir)
	if err != nil {
		return "", fmt.Errorf("login: %w", err)
	}
	server := serverAddress(reg)
	ac := types.AuthConfig{Username: creds.Username, Password: creds.Password, ServerAddress: server}
	if err := cf.GetCredentialsStore(server).Store(ac); err != nil {
		return "", fmt.Errorf("login to %s: store credentials in %s: %w", reg.RegistryStr(), cf.Filename, err)
	}
	return server, nil
}

// Logout removes the stored credentials of host. Logging out of a
// registry without credentials is not an error.
func Logout(host, configDir string) (string, error) {
	reg, err := registryName(host, nil)
	if err != nil {
		return "", err
	}
	cf, err := config.Load(configDir)
	if err != nil {
		return "", fmt.Errorf("logout: %w", err)
	}
	server := serverAddress(reg)
	if err := cf.GetCredentialsStore(server).Erase(server); err != nil {
		return "", fmt.Errorf("logout of %s: %w", reg.RegistryStr(), err)
	}
	return server, nil
}

func registryName(host string, insecure []string) (name.Registry, error) {
	host = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://"), "/")
	if host == "" {
		host = name.DefaultRegistry
	}
	var o []name.Option
	for _, h := range insecure {
		if h == host {
			o = append(o, name.Insecure)
		}
	}
	reg, err := name.NewRegistry(host, o...)
	if err != nil {
		return name.Registry{}, fmt.Errorf("invalid registry %q: %w", host, err)
	}
	return reg, nil
}

// serverAddress is the key docker uses for a registry's credentials.
func serverAddress(reg name.Registry) string {
	if reg.RegistryStr() == name.DefaultRegistry {
		return "https://index.docker.io/v1/"
	}
	return reg.RegistryStr()
}

// checkCredentials authenticates (a token exchange where the registry
// uses tokens) and requires GET /v2/ to answer 200.
func checkCredentials(ctx context.Context, reg name.Registry, creds Credentials, opts Options) error {
	auth := authn.FromConfig(authn.AuthConfig{Username: creds.Username, Password: creds.Password})
	base := opts.Transport
	if base == nil {
		base = remote.DefaultTransport
	}
	rt, err := transport.NewWithContext(ctx, reg, auth, base, nil)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reg.Scheme()+"://"+reg.RegistryStr()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("unauthorized: the registry refused the username or password")
	}
	return transport.CheckError(resp, http.StatusOK)
}
