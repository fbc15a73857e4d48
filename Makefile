# Builds and installs cmkfs (see docs/operator-guide.md, "Install").
#
#   make install PREFIX=/usr/local     # release build, then install (as root)
#   make uninstall PREFIX=/usr/local   # removes exactly the files install put
#   make install DESTDIR=/tmp/stage PREFIX=/usr SWIFT_BUILD_DIR=.build/debug   # staging, prebuilt
#
# SWIFT_BUILD_DIR names a directory that already holds the cmkfs and cmkfs-kms binaries; when it
# is empty, `install` runs `swift build -c release $(SWIFT_FLAGS)` first.

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
# mount(8) looks for helpers in /sbin whatever the prefix.
SBINDIR ?= /sbin
UNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/cmkfs
# Where each shell looks for completions a package installs (bash-completion, fish's
# vendor_completions.d); zsh's fpath has PREFIX/share/zsh/site-functions for /usr/local and
# Debian's vendor-completions for /usr.
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(if $(filter /usr,$(PREFIX)),/usr/share/zsh/vendor-completions,$(PREFIX)/share/zsh/site-functions)
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
SWIFT ?= swift
SWIFT_FLAGS ?=
SWIFT_BUILD_DIR ?=

export PATH := $(PATH):/opt/swift/usr/bin

# Every installed file, relative to DESTDIR.
BIN_FILES = $(BINDIR)/cmkfs $(BINDIR)/cmkfs-kms
HELPER_FILE = $(SBINDIR)/mount.fuse.cmkfs
UNIT_FILES = $(UNITDIR)/cmkfs@.service $(UNITDIR)/cmkfs-kms.service
MAN_FILES = $(MANDIR)/man1/cmkfs.1 $(MANDIR)/man1/cmkfs-kms.1 $(MANDIR)/man8/mount.fuse.cmkfs.8
DOC_FILES = $(DOCDIR)/volume.conf.example
# Generated at install by the binaries themselves (swift-argument-parser), so they always
# match the installed commands and options.
COMPLETION_FILES = $(BASHCOMPDIR)/cmkfs $(BASHCOMPDIR)/cmkfs-kms $(ZSHCOMPDIR)/_cmkfs $(ZSHCOMPDIR)/_cmkfs-kms \
    $(FISHCOMPDIR)/cmkfs.fish $(FISHCOMPDIR)/cmkfs-kms.fish
INSTALLED = $(BIN_FILES) $(HELPER_FILE) $(UNIT_FILES) $(MAN_FILES) $(DOC_FILES) $(COMPLETION_FILES)

# The sources carry /usr/local/bin (the default); installs elsewhere point at $(BINDIR).
FIX_BINDIR = sed -e 's|/usr/local/bin/|$(BINDIR)/|g'

.PHONY: all build install uninstall installed-files

all: build

build:
ifeq ($(SWIFT_BUILD_DIR),)
	$(SWIFT) build -c release $(SWIFT_FLAGS)
endif

install: build
	@bin='$(SWIFT_BUILD_DIR)'; \
	if [ -z "$$bin" ]; then bin=$$($(SWIFT) build -c release $(SWIFT_FLAGS) --show-bin-path) || exit 1; fi; \
	set -ex; \
	install -d '$(DESTDIR)$(BINDIR)' '$(DESTDIR)$(SBINDIR)' '$(DESTDIR)$(UNITDIR)' \
	    '$(DESTDIR)$(MANDIR)/man1' '$(DESTDIR)$(MANDIR)/man8' '$(DESTDIR)$(DOCDIR)'; \
	install -m 0755 "$$bin/cmkfs" '$(DESTDIR)$(BINDIR)/cmkfs'; \
	install -m 0755 "$$bin/cmkfs-kms" '$(DESTDIR)$(BINDIR)/cmkfs-kms'
	$(FIX_BINDIR) mount-helpers/mount.cmkfs > '$(DESTDIR)$(HELPER_FILE)'
	chmod 0755 '$(DESTDIR)$(HELPER_FILE)'
	$(FIX_BINDIR) packaging/systemd/cmkfs@.service > '$(DESTDIR)$(UNITDIR)/cmkfs@.service'
	$(FIX_BINDIR) packaging/systemd/cmkfs-kms.service > '$(DESTDIR)$(UNITDIR)/cmkfs-kms.service'
	chmod 0644 '$(DESTDIR)$(UNITDIR)/cmkfs@.service' '$(DESTDIR)$(UNITDIR)/cmkfs-kms.service'
	install -m 0644 man/cmkfs.1 man/cmkfs-kms.1 '$(DESTDIR)$(MANDIR)/man1/'
	install -m 0644 man/mount.fuse.cmkfs.8 '$(DESTDIR)$(MANDIR)/man8/'
	install -m 0644 packaging/systemd/volume.conf.example '$(DESTDIR)$(DOCDIR)/volume.conf.example'
	install -d '$(DESTDIR)$(BASHCOMPDIR)' '$(DESTDIR)$(ZSHCOMPDIR)' '$(DESTDIR)$(FISHCOMPDIR)'
	@set -e; for b in cmkfs cmkfs-kms; do \
	    '$(DESTDIR)$(BINDIR)'/$$b --generate-completion-script bash > '$(DESTDIR)$(BASHCOMPDIR)'/$$b; \
	    '$(DESTDIR)$(BINDIR)'/$$b --generate-completion-script zsh > '$(DESTDIR)$(ZSHCOMPDIR)'/_$$b; \
	    '$(DESTDIR)$(BINDIR)'/$$b --generate-completion-script fish > '$(DESTDIR)$(FISHCOMPDIR)'/$$b.fish; \
	    chmod 0644 '$(DESTDIR)$(BASHCOMPDIR)'/$$b '$(DESTDIR)$(ZSHCOMPDIR)'/_$$b '$(DESTDIR)$(FISHCOMPDIR)'/$$b.fish; \
	done
	@if [ -z '$(DESTDIR)' ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi

# Only the files install put (never a directory shared with other software; DOCDIR is ours).
uninstall:
	rm -f $(foreach f,$(INSTALLED),'$(DESTDIR)$(f)')
	rmdir '$(DESTDIR)$(DOCDIR)' 2>/dev/null || true
	@if [ -z '$(DESTDIR)' ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi

# The list install writes (for packagers and the tests).
installed-files:
	@for f in $(INSTALLED); do echo "$$f"; done
