// Package safefile reads the small files that boxproxy's configuration names
// (secrets behind _FILE variables, the JWT app configuration and key, CA
// certificates, the token store) without trusting what the name points at: a
// device such as /dev/zero would be read until memory runs out, a FIFO would
// block the start for ever, a huge file would be read whole. Only a regular
// file of at most the given size is read. Errors never hold the path: callers
// name the variable, and a value put in a path variable by mistake is often
// the secret itself.
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// MaxSize is the limit for configuration files and the token store: each
// holds a few kilobytes.
const MaxSize = 1 << 20

// Read returns the content of the regular file at path, of at most limit
// bytes.
func Read(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, Unwrap(err)
	}
	if err := check(fi, limit); err != nil {
		return nil, err
	}
	// Stat and open are two steps: what is opened is checked again (opened
	// without blocking, should a FIFO have taken the file's place), and a
	// file that grew meanwhile is read no further than the limit.
	f, err := os.OpenFile(path, os.O_RDONLY|openNonblock, 0)
	if err != nil {
		return nil, Unwrap(err)
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, Unwrap(err)
	}
	if err := check(fi, limit); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, Unwrap(err)
	}
	if int64(len(data)) > limit {
		return nil, tooLarge(limit)
	}
	return data, nil
}

func check(fi fs.FileInfo, limit int64) error {
	switch {
	case fi.IsDir():
		return errors.New("it is a directory, not a file")
	case !fi.Mode().IsRegular():
		return errors.New("it is not a regular file (a device, pipe or socket)")
	case fi.Size() > limit:
		return tooLarge(limit)
	}
	return nil
}

func tooLarge(limit int64) error {
	if limit%(1<<20) == 0 {
		return fmt.Errorf("it is larger than %d MiB (the limit for this file)", limit>>20)
	}
	return fmt.Errorf("it is larger than %d bytes (the limit for this file)", limit)
}

// Unwrap drops the path and operation of an *fs.PathError or *os.LinkError.
func Unwrap(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}
