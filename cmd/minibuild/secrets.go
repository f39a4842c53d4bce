package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// loadSecrets reads build secrets given as docker's --secret flags:
// "id=X,src=FILE" (or source=), "id=X,env=VAR", or "id=X" alone (the
// variable X, else the file X). Errors name the id and where it was
// looked for, never a value.
func loadSecrets(specs []string, lookupEnv func(string) (string, bool)) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, spec := range specs {
		id, src, env, err := parseSecret(spec, lookupEnv)
		if err != nil {
			return nil, err
		}
		if env != "" {
			v, ok := lookupEnv(env)
			if !ok {
				return nil, fmt.Errorf("--secret id=%s: environment variable %s is not set", id, env)
			}
			out[id] = []byte(v)
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the OS error alone: never any content
			}
			return nil, fmt.Errorf("--secret id=%s: read %s: %w", id, src, err)
		}
		out[id] = b
	}
	return out, nil
}

// parseSecret splits one --secret into its id and its source: a file
// (src) or an environment variable (env).
func parseSecret(spec string, lookupEnv func(string) (string, bool)) (id, src, env string, err error) {
	var typ string
	for _, f := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return "", "", "", fmt.Errorf("--secret %s: want id=ID,src=FILE or id=ID,env=VAR", spec)
		}
		switch strings.ToLower(k) {
		case "id":
			id = v
		case "src", "source":
			src = v
		case "env":
			env = v
		case "type":
			typ = v
		default:
			return "", "", "", fmt.Errorf("--secret %s: unknown key %q", spec, k)
		}
	}
	if id == "" {
		switch {
		case src != "":
			id = filepath.Base(src)
		case env != "":
			id = env
		default:
			return "", "", "", fmt.Errorf("--secret %s: no id", spec)
		}
	}
	switch {
	case typ == "env" && src != "" && env == "":
		env, src = src, ""
	case typ == "" && src == "" && env == "":
		if _, ok := lookupEnv(id); ok {
			env = id
		} else {
			src = id
		}
	}
	return id, src, env, nil
}
