// Package layeropt checks BuildKit's layer-encoding options (compression,
// compression-level, force-compression, oci-mediatypes) where --cache-to
// and -o accept them. minibuild writes every layer with one compressor at
// one fixed setting (DESIGN invariant 3: the same content gives the same
// digest on every host) and never re-compresses a stored layer, so the
// options that ask for what already happens are accepted and the others
// are refused by name: none is ever accepted and then ignored.
package layeropt

import (
	"fmt"
	"strconv"
)

// Check reports whether key is a layer-encoding option and, if it is,
// whether value asks for what minibuild does (nil) or for something it
// cannot do (an error naming the option and why).
func Check(key, value string) (bool, error) {
	switch key {
	case "compression":
		switch value {
		case "gzip":
			return true, nil
		case "zstd", "estargz", "uncompressed":
			return true, fmt.Errorf("compression=%s is not supported: layers are gzip (one compressor at fixed settings, so that digests are reproducible)", value)
		}
		return true, fmt.Errorf("compression=%s: BuildKit knows gzip, estargz, zstd and uncompressed; minibuild writes gzip", value)
	case "compression-level":
		return true, fmt.Errorf("compression-level is not supported: layers are gzip at one fixed level, so that the same content gives the same digest")
	case "force-compression":
		return true, wantBool(key, value, false, "layers are exported as they are stored, never re-compressed")
	case "oci-mediatypes":
		return true, wantBool(key, value, true, "manifests and layers always use OCI media types")
	}
	return false, nil
}

// wantBool accepts value when it is a boolean equal to supported, and
// otherwise says why the other value is not supported.
func wantBool(key, value string, supported bool, why string) error {
	b, err := strconv.ParseBool(value)
	if err != nil {
		return fmt.Errorf("%s=%s: want true or false", key, value)
	}
	if b != supported {
		return fmt.Errorf("%s=%t is not supported: %s", key, b, why)
	}
	return nil
}

// Bool parses a boolean option's value ("" is true, as in BuildKit's
// ignore-error and push).
func Bool(key, value string) (bool, error) {
	if value == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(value)
	if err != nil {
		return false, fmt.Errorf("%s=%s: want true or false", key, value)
	}
	return b, nil
}
