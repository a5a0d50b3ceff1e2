package gitops

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// authMethod turns Flux-style credentials into a go-git auth method. A
// password or token for a plain http:// URL is refused unless r allows it:
// anyone on the path could read it.
func (r *Repositories) authMethod(src Source) (transport.AuthMethod, error) {
	c := src.Credentials
	if len(c.Identity) == 0 && (c.BearerToken != "" || c.Username != "" || c.Password != "") &&
		!r.credentialsOverHTTP && strings.HasPrefix(strings.ToLower(src.URL), "http://") {
		return nil, fmt.Errorf("%w to %s: use an https:// URL, or start sluice with --insecure-credentials-over-http on a network where clear text is safe",
			ErrInsecureCredentials, src.URL)
	}
	switch {
	case len(c.Identity) > 0:
		keys, err := gitssh.NewPublicKeys("git", c.Identity, c.Password)
		if err != nil {
			return nil, fmt.Errorf("reading the SSH identity: %w", err)
		}
		if u, err := transport.NewEndpoint(src.URL); err == nil && u.User != "" {
			keys.User = u.User
		}
		callback, err := knownHostsCallback(c.KnownHosts)
		if err != nil {
			return nil, err
		}
		keys.HostKeyCallback = callback
		return keys, nil
	case c.BearerToken != "":
		return &githttp.TokenAuth{Token: c.BearerToken}, nil
	case c.Username != "" || c.Password != "":
		return &githttp.BasicAuth{Username: c.Username, Password: c.Password}, nil
	}
	return nil, nil
}

func knownHostsCallback(knownHosts []byte) (ssh.HostKeyCallback, error) {
	if len(knownHosts) == 0 {
		return nil, errors.New("an SSH identity needs known_hosts in the secret")
	}
	f, err := os.CreateTemp("", "known_hosts")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(knownHosts); err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	return knownhosts.New(f.Name())
}

// signingEntity reads an armored OpenPGP private key, decrypting it with
// passphrase when it is encrypted; nil when there is no key.
func signingEntity(armored, passphrase []byte) (*openpgp.Entity, error) {
	if len(armored) == 0 {
		return nil, nil
	}
	ring, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(armored))
	if err != nil || len(ring) == 0 {
		return nil, fmt.Errorf("reading the OpenPGP signing key: %v", err)
	}
	entity := ring[0]
	if entity.PrivateKey == nil {
		return nil, errors.New("the OpenPGP signing key has no private key")
	}
	if entity.PrivateKey.Encrypted {
		if err := entity.PrivateKey.Decrypt(passphrase); err != nil {
			return nil, fmt.Errorf("decrypting the OpenPGP signing key: %w", err)
		}
		for _, sub := range entity.Subkeys {
			if sub.PrivateKey != nil && sub.PrivateKey.Encrypted {
				if err := sub.PrivateKey.Decrypt(passphrase); err != nil {
					return nil, fmt.Errorf("decrypting the OpenPGP signing subkey: %w", err)
				}
			}
		}
	}
	return entity, nil
}
