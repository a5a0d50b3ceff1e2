package stack

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHServer serves the Git server's repositories over SSH on loopback: it
// authenticates clients by public key and runs git-upload-pack and
// git-receive-pack, as a Git host's SSH endpoint does.
type SSHServer struct {
	// URL is the base URL under which <name>.git repositories are served.
	URL string
	// KnownHosts is a known_hosts line for the server's host key.
	KnownHosts string

	root       string
	authorized ssh.PublicKey
	listener   net.Listener
}

// StartSSHServer serves the bare repositories under root to the holder of
// the private key whose public half is authorized.
func StartSSHServer(root string, authorized ssh.PublicKey) (*SSHServer, error) {
	_, hostKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(hostKey)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &SSHServer{
		URL:        "ssh://git@" + l.Addr().String(),
		KnownHosts: knownhosts.Line([]string{knownhosts.Normalize(l.Addr().String())}, signer.PublicKey()),
		root:       root,
		authorized: authorized,
		listener:   l,
	}
	config := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if string(key.Marshal()) == string(s.authorized.Marshal()) {
				return &ssh.Permissions{}, nil
			}
			return nil, fmt.Errorf("unknown public key")
		},
	}
	config.AddHostKey(signer)
	go s.serve(config)
	return s, nil
}

// RepositoryURL is the SSH URL of repository <name>.git.
func (s *SSHServer) RepositoryURL(name string) string { return s.URL + "/" + name + ".git" }

// Close stops serving.
func (s *SSHServer) Close() error { return s.listener.Close() }

func (s *SSHServer) serve(config *ssh.ServerConfig) {
	for {
		conn, err := s.listener.Accept()
		if err != nil {
			return
		}
		go func() {
			_, channels, requests, err := ssh.NewServerConn(conn, config)
			if err != nil {
				conn.Close()
				return
			}
			go ssh.DiscardRequests(requests)
			for nc := range channels {
				if nc.ChannelType() != "session" {
					_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
					continue
				}
				ch, reqs, err := nc.Accept()
				if err != nil {
					continue
				}
				go s.session(ch, reqs)
			}
		}()
	}
}

// session runs the one git command an SSH Git client asks for.
func (s *SSHServer) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			_ = req.Reply(false, nil)
			continue
		}
		var payload struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
			_ = req.Reply(false, nil)
			return
		}
		service, path, ok := strings.Cut(payload.Command, " ")
		if !ok || (service != "git-upload-pack" && service != "git-receive-pack") {
			_ = req.Reply(false, nil)
			return
		}
		repo := filepath.Join(s.root, filepath.Clean("/"+strings.Trim(path, "'\"")))
		_ = req.Reply(true, nil)
		cmd := exec.Command(service, repo)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
		status := uint32(0)
		if err := cmd.Run(); err != nil {
			status = 1
			if exit, ok := err.(*exec.ExitError); ok {
				status = uint32(exit.ExitCode())
			}
		}
		_ = ch.CloseWrite()
		b := make([]byte, 4)
		binary.BigEndian.PutUint32(b, status)
		_, _ = ch.SendRequest("exit-status", false, b)
		return
	}
}

var _ io.Closer = (*SSHServer)(nil)
