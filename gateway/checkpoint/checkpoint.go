// Package checkpoint keeps, per vCenter, the position below which every
// event is acknowledged (delivered, dropped by a filter or dead-lettered),
// so a restarted router resumes there and loses nothing.
//
// A checkpoint file is written atomically: a temporary file in the same
// directory, fsync, rename over the old file, fsync the directory. A crash at
// any point leaves either the old or the new checkpoint, never a torn one. A
// file whose content cannot be used (corrupt, truncated, another vCenter's
// URL) is moved aside for inspection and the router starts as without one;
// a file that cannot be read at all (permission denied, I/O error) is an
// error: the router stops rather than overwrite a good checkpoint.
//
// Version 2 also keeps one position per processor (by processor name); the
// file's watermark is their minimum, where the stream resumes, and each
// processor then skips what it had already finished. A version 1 file loads
// with every processor at its watermark.
//
// The file is named after the vCenter's URL. It records the instance UUID
// it was written for: a vCenter restored from a backup or replaced at the
// same address answers with another UUID, and is resumed by time.
package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// Version is the version of the checkpoint format this router writes; it
// reads version 1 too.
const Version = 2

// File is a checkpoint's content.
type File struct {
	Version      int    `json:"version"`
	InstanceUUID string `json:"instanceUuid"`
	Source       string `json:"source"` // the vCenter URL
	// Watermark is the stream's position: the minimum of Processors.
	Watermark gateway.Position `json:"watermark"`
	// Processors holds each processor's position (version 2): every
	// event at or before it is finished for that processor. A processor
	// absent from it is at Watermark.
	Processors map[string]gateway.Position `json:"processors,omitempty"`
	Updated    time.Time                   `json:"updated"`
}

// FS is the file system a Store writes through. The real one is OS; tests
// inject faults (a crash between the temporary write and the rename) with a
// double of this interface.
type FS interface {
	CreateTemp(dir, pattern string) (TempFile, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
	ReadFile(name string) ([]byte, error)
	SyncDir(dir string) error
	MkdirAll(dir string, perm fs.FileMode) error
}

// TempFile is the part of *os.File a Store uses.
type TempFile interface {
	io.Writer
	Name() string
	Sync() error
	Close() error
}

// OS is the operating system's file system.
type OS struct{}

// CreateTemp calls os.CreateTemp.
func (OS) CreateTemp(dir, pattern string) (TempFile, error) { return os.CreateTemp(dir, pattern) }

// Rename calls os.Rename.
func (OS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }

// Remove calls os.Remove.
func (OS) Remove(name string) error { return os.Remove(name) }

// ReadFile calls os.ReadFile.
func (OS) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

// MkdirAll calls os.MkdirAll.
func (OS) MkdirAll(dir string, perm fs.FileMode) error { return os.MkdirAll(dir, perm) }

// SyncDir fsyncs a directory, making a rename in it durable.
func (OS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}

// Store reads and writes the checkpoints under one directory.
type Store struct {
	dir string
	fs  FS
	log *slog.Logger
	now func() time.Time
}

// NewStore returns a store in dir (the state directory's checkpoints/),
// creating it if needed.
func NewStore(dir string, fsys FS, log *slog.Logger) (*Store, error) {
	if fsys == nil {
		fsys = OS{}
	}
	if err := fsys.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("checkpoint directory: %w", err)
	}
	return &Store{dir: dir, fs: fsys, log: log, now: time.Now}, nil
}

// path names a vCenter's checkpoint by a hash of its URL: two vCenters
// restored from one backup (one instance UUID) stay apart, and a vCenter
// restored or replaced at its address (a new UUID) keeps its checkpoint.
func (s *Store) path(source string) string {
	h := sha256.Sum256([]byte(source))
	return filepath.Join(s.dir, "vcenter-"+hex.EncodeToString(h[:8])+".json")
}

// legacyPath is where the first release kept a checkpoint: a hash of the
// instance UUID and the URL. Load moves such a file to path.
func (s *Store) legacyPath(instanceUUID, source string) string {
	h := sha256.Sum256([]byte(instanceUUID + "\x00" + source))
	return filepath.Join(s.dir, "vcenter-"+hex.EncodeToString(h[:8])+".json")
}

// Parse reads a checkpoint file's content, checking it belongs to the
// vCenter at source. It never panics (FuzzParse).
func Parse(data []byte, source string) (File, error) {
	var f File
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return File{}, errors.New("empty file")
		}
		return File{}, fmt.Errorf("not a checkpoint: %w", err)
	}
	if dec.More() {
		return File{}, errors.New("not a checkpoint: data after the JSON object")
	}
	switch {
	case f.Version != 1 && f.Version != Version:
		return File{}, fmt.Errorf("unknown checkpoint version %d (this router writes %d)", f.Version, Version)
	case f.Version == 1 && f.Processors != nil:
		return File{}, errors.New("version 1 checkpoint with processor positions")
	case f.Source != source:
		return File{}, fmt.Errorf("checkpoint of another vCenter (%s at %s)", f.InstanceUUID, f.Source)
	case f.InstanceUUID == "":
		return File{}, errors.New("checkpoint without an instance UUID")
	case f.Watermark.Time.IsZero():
		return File{}, errors.New("checkpoint without a watermark time")
	}
	for name, p := range f.Processors {
		// The watermark is the processors' minimum: one before it would
		// have been resumed from a later position than its own.
		switch {
		case name == "":
			return File{}, errors.New("processor position without a name")
		case p.Before(f.Watermark):
			return File{}, fmt.Errorf("processor %s position (key %d) before the watermark (key %d)", name, p.Key, f.Watermark.Key)
		}
	}
	return f, nil
}

// Load returns the checkpoint of the vCenter at source, whatever instance
// UUID it was written for (File.InstanceUUID), and false when there is none.
// A file whose content cannot be used is moved aside (renamed
// *.bad-TIMESTAMP), logged, and reported as none: the router then starts
// from "now", as without a checkpoint, rather than replaying an unknown
// stretch of history. A file that cannot be read (permission denied, an I/O
// error) is an error naming it: it may be a good checkpoint, which starting
// from "now" would overwrite.
func (s *Store) Load(instanceUUID, source string) (File, bool, error) {
	p := s.path(source)
	data, err := s.fs.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		if data, err = s.loadLegacy(p, instanceUUID, source); errors.Is(err, fs.ErrNotExist) {
			s.log.Info("no checkpoint yet; starting from now", "vcenter", source)
			return File{}, false, nil
		}
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is named below, for file-system doubles too
		}
		return File{}, false, fmt.Errorf("reading checkpoint %s: %w", p, err)
	}
	f, err := Parse(data, source)
	if err == nil {
		return f, true, nil
	}
	aside := fmt.Sprintf("%s.bad-%s", p, s.now().UTC().Format("20060102T150405Z"))
	if rerr := s.fs.Rename(p, aside); rerr != nil {
		s.log.Error("unusable checkpoint, and it could not be moved aside; starting from now", "file", p, "err", err, "rename_err", rerr)
		return File{}, false, nil
	}
	s.log.Error("unusable checkpoint moved aside; starting from now (events while the router was down are not replayed)",
		"file", p, "moved_to", aside, "err", err)
	return File{}, false, nil
}

// loadLegacy moves the first release's file for (instanceUUID, source), if
// any, to p and returns its content.
func (s *Store) loadLegacy(p, instanceUUID, source string) ([]byte, error) {
	old := s.legacyPath(instanceUUID, source)
	data, err := s.fs.ReadFile(old)
	if err != nil {
		return nil, err
	}
	if err := s.fs.Rename(old, p); err != nil {
		return nil, fmt.Errorf("moving %s to %s: %w", old, p, err)
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return nil, fmt.Errorf("moving %s to %s: fsync directory: %w", old, p, err)
	}
	s.log.Info("checkpoint renamed to this release's name", "from", old, "to", p)
	return data, nil
}

// Save writes the vCenter's checkpoint atomically: the stream's watermark
// and each processor's position (none at or before wm may be omitted).
func (s *Store) Save(instanceUUID, source string, wm gateway.Position, processors map[string]gateway.Position) error {
	f := File{Version: Version, InstanceUUID: instanceUUID, Source: source, Watermark: wm, Processors: processors,
		Updated: s.now().UTC()}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	p := s.path(source)
	tmp, err := s.fs.CreateTemp(s.dir, ".checkpoint-*.tmp")
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tmp.Close()
			_ = s.fs.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("checkpoint: write: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("checkpoint: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("checkpoint: close: %w", err)
	}
	if err := s.fs.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("checkpoint: rename: %w", err)
	}
	committed = true
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("checkpoint: fsync directory: %w", err)
	}
	return nil
}
