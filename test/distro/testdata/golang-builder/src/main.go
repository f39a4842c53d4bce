// Command hello prints a greeting and where it runs from.
package main

import (
	"fmt"
	"os"
)

func main() {
	exe, _ := os.Executable()
	fmt.Printf("hello from Go, built in a builder stage (%s)\n", exe)
}
