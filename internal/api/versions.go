package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// The block storage API's version discovery and microversions.
//
// GET / answers 300 Multiple Choices with the versions document, GET
// /v3/ 200 with the same document: the one version, v3.0, with the
// range of microversions served. A request picks a microversion with
// the header "OpenStack-API-Version: volume 3.N" ("latest" for the
// highest); without one it gets the lowest. Every answer under /v3
// carries the version it was served at in the same header, and Vary on
// it. A version outside the range answers 406, a malformed one 400.
//
// The range is the one whose changes cairn makes: it grows as the
// behaviour of each microversion is built, never ahead of it
// (microversions.go lists them).

// microversion is a block storage API microversion, 3.Minor.
type microversion struct{ Major, Minor int }

func (v microversion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

const (
	// minMinor and maxMinor bound the microversions served: 3.minMinor
	// to 3.maxMinor.
	minMinor = 0
	maxMinor = 10
	// versionsUpdated is the "updated" of the versions document: when
	// the range last changed.
	versionsUpdated = "2026-12-06T00:00:00Z"

	// versionHeader is where a request asks for a microversion and an
	// answer tells the one it was served at.
	versionHeader = "OpenStack-API-Version"
	// versionService is the service name in versionHeader.
	versionService = "volume"
)

// minMicroversion and maxMicroversion are the lowest and highest
// microversions served.
func minMicroversion() microversion { return microversion{3, minMinor} }
func maxMicroversion() microversion { return microversion{3, maxMinor} }

// parseMicroversion reads "3.N" (or "latest").
func parseMicroversion(s string) (microversion, error) {
	if strings.EqualFold(s, "latest") {
		return maxMicroversion(), nil
	}
	maj, min, ok := strings.Cut(s, ".")
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(min)
	if !ok || err1 != nil || err2 != nil || a < 0 || b < 0 || strings.HasPrefix(min, "+") || strings.HasPrefix(maj, "+") {
		return microversion{}, fmt.Errorf("microversion %q: want MAJOR.MINOR or latest: %w", s, cairn.ErrInvalid)
	}
	return microversion{a, b}, nil
}

// requestedVersion reads the microversion a request asks for from its
// OpenStack-API-Version headers: the lowest when it names none for the
// volume service.
func requestedVersion(h http.Header) (microversion, error) {
	for _, line := range h.Values(versionHeader) {
		for _, item := range strings.Split(line, ",") {
			service, version, ok := strings.Cut(strings.TrimSpace(item), " ")
			if !ok || !strings.EqualFold(service, versionService) {
				continue
			}
			return parseMicroversion(strings.TrimSpace(version))
		}
	}
	return minMicroversion(), nil
}

// withMicroversion negotiates the request's microversion before h
// serves it (after the caller is authenticated, as the block storage
// API's pipeline does).
func withMicroversion(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		w.Header().Add("Vary", versionHeader)
		v, err := requestedVersion(r.Header)
		if err != nil {
			return err
		}
		if v.Major != 3 || v.Minor < minMinor || v.Minor > maxMinor {
			writeFault(w, http.StatusNotAcceptable, fmt.Sprintf("version %s is not supported by the API: the versions served are %s to %s",
				v, minMicroversion(), maxMicroversion()))
			return nil
		}
		w.Header().Set(versionHeader, versionService+" "+v.String())
		return h(w, r.WithContext(context.WithValue(r.Context(), microversionKey{}, v)), c)
	}
}

// microversionKey keys the negotiated microversion in a request's
// context.
type microversionKey struct{}

// requestMicroversion is the microversion withMicroversion negotiated
// for r: the lowest served for a request it did not see.
func requestMicroversion(r *http.Request) microversion {
	if v, ok := r.Context().Value(microversionKey{}).(microversion); ok {
		return v
	}
	return minMicroversion()
}

// atLeast reports whether r was negotiated at 3.minor or later: whether
// the change the block storage API made at 3.minor applies to it.
func atLeast(r *http.Request, minor int) bool {
	v := requestMicroversion(r)
	return v.Major > 3 || v.Major == 3 && v.Minor >= minor
}

// baseURL is the scheme and host the request was sent to, for the
// absolute links clients follow: https when it came over TLS or through
// a proxy that says so.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// versionDoc is the one version in the versions document.
func versionDoc(r *http.Request) wire.APIVersion {
	return wire.APIVersion{
		ID: "v3.0", Status: "CURRENT", Version: maxMicroversion().String(), MinVersion: minMicroversion().String(),
		Updated: versionsUpdated,
		Links: []wire.Link{
			{Rel: "describedby", Href: "https://docs.openstack.org/", Type: "text/html"},
			{Rel: "self", Href: baseURL(r) + "/v3/"},
		},
		MediaTypes: []wire.MediaType{{Base: "application/json", Type: "application/vnd.openstack.volume+json;version=3"}},
	}
}

// versions answers GET /: the versions document, with 300 Multiple
// Choices as the block storage API does.
func (s *Server) versions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusMultipleChoices, map[string]any{"versions": []wire.APIVersion{versionDoc(r)}})
}

// version answers GET /v3/: the version's document.
func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"versions": []wire.APIVersion{versionDoc(r)}})
}
