package stack

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// GitServer serves the bare repositories under Root over Git's smart HTTP
// protocol (git http-backend), with basic auth and pushes enabled, on
// loopback.
type GitServer struct {
	// URL is the base URL under which <name>.git repositories are served.
	URL string
	// Root is the folder of the bare repositories.
	Root string
	// Username and Password are the basic-auth credentials it accepts.
	Username, Password string
	// Token, when set, is a bearer token it accepts too.
	Token string
	// ReadOnlyUsername and ReadOnlyPassword, when set, may fetch but not
	// push.
	ReadOnlyUsername, ReadOnlyPassword string

	server *http.Server
}

// StartGitServer serves root on a free loopback port.
func StartGitServer(root, username, password string) (*GitServer, error) {
	gitBin, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("the Git server needs git: %w", err)
	}
	execPath, err := exec.Command(gitBin, "--exec-path").Output()
	if err != nil {
		return nil, fmt.Errorf("finding git's exec path: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &GitServer{
		URL:      "http://" + l.Addr().String(),
		Root:     root,
		Username: username,
		Password: password,
	}
	backend := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env: []string{
			"GIT_PROJECT_ROOT=" + root,
			"GIT_HTTP_EXPORT_ALL=1",
			"REMOTE_USER=" + username,
		},
	}
	s.server = &http.Server{Handler: s.authenticate(backend), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.server.Serve(l) }()
	return s, nil
}

// authenticate lets through only requests with the server's credentials,
// and pushes only with the read-write ones.
func (s *GitServer) authenticate(next http.Handler) http.Handler {
	equal := func(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		push := strings.HasSuffix(r.URL.Path, "/git-receive-pack") || r.URL.Query().Get("service") == "git-receive-pack"
		user, pass, basic := r.BasicAuth()
		bearer, hasBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		switch {
		case basic && equal(user, s.Username) && equal(pass, s.Password):
		case hasBearer && s.Token != "" && equal(bearer, s.Token):
		case basic && s.ReadOnlyUsername != "" && equal(user, s.ReadOnlyUsername) && equal(pass, s.ReadOnlyPassword):
			if push {
				http.Error(w, "this user may not push", http.StatusForbidden)
				return
			}
		default:
			w.Header().Set("WWW-Authenticate", `Basic realm="sluice"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// CreateRepository creates an empty bare repository <name>.git whose default
// branch is main, and returns its URL.
func (s *GitServer) CreateRepository(name string) (string, error) {
	dir := filepath.Join(s.Root, name+".git")
	if _, err := os.Stat(dir); err == nil {
		return "", fmt.Errorf("repository %s exists", name)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	for _, args := range [][]string{
		{"init", "--quiet", "--bare", "--initial-branch=main", dir},
		{"-C", dir, "config", "http.receivepack", "true"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return s.RepositoryURL(name), nil
}

// RepositoryURL is the URL of repository <name>.git.
func (s *GitServer) RepositoryURL(name string) string {
	return s.URL + "/" + name + ".git"
}

// Close stops serving.
func (s *GitServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.server.Shutdown(ctx)
}
