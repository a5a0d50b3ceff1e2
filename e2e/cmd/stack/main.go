// Command stack runs sluice's local stack in the background for people to
// use by hand: `stack up` starts it and writes <dir>/env, `stack down` stops
// it.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/e2e/stack"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", ".stack", "folder of the stack's state, logs and env file")
	bin := fs.String("bin", "bin", "folder of the tools built by 'make tools'")
	root := fs.String("root", ".", "the sluice source tree")
	_ = fs.Parse(os.Args[2:])

	var err error
	switch os.Args[1] {
	case "up":
		err = up(*dir, *bin, *root)
	case "serve":
		err = serve(*dir, *bin, *root)
	case "down":
		err = down(*dir)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stack:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: stack up|down [--dir DIR] [--bin DIR] [--root DIR]")
	os.Exit(2)
}

// up builds sluice, starts `stack serve` detached from the terminal and
// waits until it has written the env file.
func up(dir, bin, root string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	envFile := filepath.Join(dir, "env")
	if _, err := os.Stat(filepath.Join(dir, "pids", "stack.pid")); err == nil {
		return fmt.Errorf("a stack is already running in %s; run 'make down' first", dir)
	}
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "pids"), 0o755); err != nil {
		return err
	}

	fmt.Println("building sluice")
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "sluice"), ".")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building sluice: %w", err)
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(dir, "stack.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(self, "serve", "--dir", dir, "--bin", bin, "--root", root)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "pids", "stack.pid"), []byte(fmt.Sprint(cmd.Process.Pid)), 0o644); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	fmt.Printf("starting the stack (log: %s)\n", logFile.Name())
	deadline := time.After(5 * time.Minute)
	for {
		if _, err := os.Stat(envFile); err == nil {
			env, err := os.ReadFile(envFile)
			if err != nil {
				return err
			}
			fmt.Printf("\nthe stack is up; source %s to use it:\n\n%s\n", envFile, env)
			return nil
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logFile.Name())
			_ = stack.StopLeftovers(dir)
			return fmt.Errorf("the stack stopped while starting (%v):\n%s", err, log)
		case <-deadline:
			_ = down(dir)
			return errors.New("the stack did not come up in 5 minutes")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// serve runs the stack in the foreground until SIGTERM or SIGINT.
func serve(dir, bin, root string) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	password := make([]byte, 12)
	if _, err := rand.Read(password); err != nil {
		return err
	}
	s, err := stack.Start(ctx, stack.Options{
		Dir:         dir,
		BinDir:      bin,
		CRDDir:      filepath.Join(root, "config", "crd", "bases"),
		InstallDir:  filepath.Join(root, "config", "default"),
		Sluice:      filepath.Join(dir, "sluice"),
		GitUsername: "sluice",
		GitPassword: hex.EncodeToString(password),
		Logf:        func(f string, a ...any) { fmt.Printf(f+"\n", a...) },
	})
	if err != nil {
		return err
	}
	defer s.Stop()

	if err := os.WriteFile(filepath.Join(dir, "env"), []byte(s.Env()), 0o600); err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Println("stopping the stack")
	return nil
}

// down stops the stack in dir.
func down(dir string) error {
	pidFile := filepath.Join(dir, "pids", "stack.pid")
	if _, err := os.Stat(pidFile); errors.Is(err, os.ErrNotExist) {
		fmt.Println("no stack is running in", dir)
		return stack.StopLeftovers(dir)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return err
	}
	var pid int
	if _, err := fmt.Sscan(string(data), &pid); err != nil {
		return fmt.Errorf("%s: %w", pidFile, err)
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 300 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	_ = os.Remove(pidFile)
	_ = os.Remove(filepath.Join(dir, "env"))
	// Anything the stack could not stop itself, for example after a crash.
	if err := stack.StopLeftovers(dir); err != nil {
		return err
	}
	fmt.Println("the stack is stopped")
	return nil
}
