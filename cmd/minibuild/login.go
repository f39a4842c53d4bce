package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/minibuild/minibuild/export"
)

func newLoginCommand() *cobra.Command {
	var user, password string
	var passwordStdin bool
	var insecure []string
	cmd := &cobra.Command{
		Use:   "login [flags] [SERVER]",
		Short: "Log in to a registry (credentials go to ~/.docker/config.json or its credential helper)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			server := ""
			if len(args) == 1 {
				server = args[0]
			}
			if password != "" && passwordStdin {
				return errors.New("--password and --password-stdin are mutually exclusive")
			}
			if passwordStdin {
				b, err := io.ReadAll(os.Stdin)
				if err != nil {
					return fmt.Errorf("read password from stdin: %w", err)
				}
				password = strings.TrimRight(string(b), "\r\n")
			}
			if user == "" {
				fmt.Fprint(os.Stderr, "Username: ")
				line, err := bufio.NewReader(os.Stdin).ReadString('\n')
				if err != nil && line == "" {
					return errors.New("login: a username is required (-u)")
				}
				user = strings.TrimSpace(line)
			}
			if password == "" && term.IsTerminal(int(os.Stdin.Fd())) {
				fmt.Fprint(os.Stderr, "Password: ")
				b, err := term.ReadPassword(int(os.Stdin.Fd()))
				fmt.Fprintln(os.Stderr)
				if err != nil {
					return fmt.Errorf("read password: %w", err)
				}
				password = string(b)
			}
			addr, err := export.Registry{Insecure: insecure}.Login(cmd.Context(), server, user, password)
			if err != nil {
				return err
			}
			fmt.Printf("Login Succeeded (%s)\n", addr)
			return nil
		},
	}
	cmd.Flags().StringVarP(&user, "username", "u", "", "username")
	cmd.Flags().StringVarP(&password, "password", "p", "", "password (prefer --password-stdin)")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	cmd.Flags().StringArrayVar(&insecure, "insecure-registry", nil, "registry host reached over plain http")
	return cmd
}

func newLogoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout [SERVER]",
		Short: "Remove a registry's stored credentials",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			server := ""
			if len(args) == 1 {
				server = args[0]
			}
			addr, err := export.Logout(server)
			if err != nil {
				return err
			}
			fmt.Printf("Removing login credentials for %s\n", addr)
			return nil
		},
	}
}
