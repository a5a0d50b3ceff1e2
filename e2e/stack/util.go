package stack

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"os"
)

// Tail returns the last n lines of the file at path, or none when it
// cannot be read: for showing the end of a component's log.
func Tail(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1024*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return lines
}

// RandomSecret is 24 random hex digits, for passwords and tokens.
func RandomSecret() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic("no randomness: " + err.Error())
	}
	return hex.EncodeToString(b)
}
