package api

import (
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// The tests here hold openapi.yaml to the code: every route routes()
// registers is documented and nothing else is, every $ref resolves, and
// the documented schemas have the fields of the Go types the API encodes
// and decodes.

// oaLoad parses the embedded document.
func oaLoad(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	return doc
}

// oaMap returns v as a mapping, whichever key type the YAML decoder used.
func oaMap(v any) map[string]any {
	switch m := v.(type) {
	case map[string]any:
		return m
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, x := range m {
			out[oaKeyString(k)] = x
		}
		return out
	}
	return nil
}

func oaKeyString(k any) string {
	switch k := k.(type) {
	case string:
		return k
	case int:
		return strconv.Itoa(k)
	}
	return ""
}

// oaLookup follows keys from v, nil when one is missing.
func oaLookup(v any, keys ...string) any {
	for _, k := range keys {
		m := oaMap(v)
		if m == nil {
			return nil
		}
		v = m[k]
	}
	return v
}

// oaResolve returns the node a local $ref ("#/a/b") names.
func oaResolve(doc map[string]any, ref string) (any, bool) {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, false
	}
	var v any = doc
	for _, part := range strings.Split(rest, "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m := oaMap(v)
		if m == nil {
			return nil, false
		}
		if v, ok = m[part]; !ok {
			return nil, false
		}
	}
	return v, true
}

// oaDeref follows $refs (and a lone allOf) until it reaches a node that is
// neither.
func oaDeref(t *testing.T, doc map[string]any, v any) map[string]any {
	t.Helper()
	for range 20 {
		m := oaMap(v)
		if ref, ok := m["$ref"].(string); ok {
			if v, ok = oaResolve(doc, ref); !ok {
				t.Fatalf("$ref %q does not resolve", ref)
			}
			continue
		}
		if all, ok := m["allOf"].([]any); ok && len(all) == 1 {
			v = all[0]
			continue
		}
		return m
	}
	t.Fatal("$ref cycle")
	return nil
}

var oaMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// oaDocumentedOps returns the documented operations, "METHOD /path".
func oaDocumentedOps(t *testing.T, doc map[string]any) map[string]map[string]any {
	t.Helper()
	paths := oaMap(doc["paths"])
	if paths == nil {
		t.Fatal("openapi.yaml: no paths")
	}
	ops := map[string]map[string]any{}
	for path, item := range paths {
		for k, op := range oaMap(item) {
			if slices.Contains(oaMethods, k) {
				ops[strings.ToUpper(k)+" "+path] = oaMap(op)
			}
		}
	}
	return ops
}

// oaRegisteredRoutes reads routes() in api.go and returns its patterns
// as the mux has them ("GET /v3/{$}"), keyed by their OpenAPI form
// ("GET /v3/"). Routes registered through the local helper p get its
// "/v3/{project_id}" prefix.
// Routes are read from the source, not listed here a second time, so a
// route added without documentation fails TestOpenAPIRoutes.
func oaRegisteredRoutes(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "api.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var routes *ast.FuncDecl
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "routes" && fd.Recv != nil {
			routes = fd
		}
	}
	if routes == nil {
		t.Fatal("api.go: no method routes")
	}
	str := func(e ast.Expr) (string, bool) {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(lit.Value)
		return s, err == nil
	}
	out := map[string]string{}
	add := func(pos token.Pos, pattern string) {
		method, path, ok := strings.Cut(pattern, " ")
		if !ok {
			if pattern == "/" {
				return // the catch-all: 404 for everything else
			}
			t.Errorf("%s: route %q has no method; document it and teach this test", fset.Position(pos), pattern)
			return
		}
		key := method + " " + oaPath(path)
		if _, dup := out[key]; dup {
			t.Errorf("%s: route %q registered twice", fset.Position(pos), pattern)
		}
		out[key] = pattern
	}
	// helpers maps a local route helper (p := func(method, path string,
	// ...) { m.HandleFunc(method+" PREFIX"+path, ...) }) to its PREFIX.
	helpers := map[string]string{}
	ast.Inspect(routes.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.AssignStmt:
			if len(n.Lhs) != 1 || len(n.Rhs) != 1 {
				return true
			}
			id, ok1 := n.Lhs[0].(*ast.Ident)
			fl, ok2 := n.Rhs[0].(*ast.FuncLit)
			if !ok1 || !ok2 {
				return true
			}
			prefix, ok := oaHelperPrefix(fl, str)
			if !ok {
				t.Errorf("%s: func literal %s in routes: not a route helper this test understands", fset.Position(n.Pos()), id.Name)
				return false
			}
			helpers[id.Name] = prefix
			return false
		case *ast.CallExpr:
			switch fn := n.Fun.(type) {
			case *ast.SelectorExpr:
				if fn.Sel.Name != "HandleFunc" && fn.Sel.Name != "Handle" {
					return true
				}
				if len(n.Args) == 0 {
					return true
				}
				pattern, ok := str(n.Args[0])
				if !ok {
					t.Errorf("%s: %s with a pattern that is not a string literal", fset.Position(n.Pos()), fn.Sel.Name)
					return true
				}
				add(n.Pos(), pattern)
			case *ast.Ident:
				prefix, ok := helpers[fn.Name]
				if !ok {
					return true
				}
				if len(n.Args) < 2 {
					t.Errorf("%s: %s call with %d arguments", fset.Position(n.Pos()), fn.Name, len(n.Args))
					return true
				}
				method, ok1 := str(n.Args[0])
				path, ok2 := str(n.Args[1])
				if !ok1 || !ok2 {
					t.Errorf("%s: %s call without string literal method and path", fset.Position(n.Pos()), fn.Name)
					return true
				}
				add(n.Pos(), method+" "+prefix+path)
			}
		}
		return true
	})
	if len(out) == 0 {
		t.Fatal("api.go: routes registers nothing this test can read")
	}
	return out
}

// oaHelperPrefix recognises a route helper's body: one HandleFunc or Handle
// call whose pattern is method + " PREFIX" + path.
func oaHelperPrefix(fl *ast.FuncLit, str func(ast.Expr) (string, bool)) (string, bool) {
	prefix, found := "", false
	ast.Inspect(fl.Body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || (sel.Sel.Name != "HandleFunc" && sel.Sel.Name != "Handle") || len(call.Args) == 0 {
			return true
		}
		// method + " PREFIX" + path parses as (method + " PREFIX") + path.
		outer, ok := call.Args[0].(*ast.BinaryExpr)
		if !ok || outer.Op != token.ADD {
			return true
		}
		inner, ok := outer.X.(*ast.BinaryExpr)
		if !ok || inner.Op != token.ADD {
			return true
		}
		_, ok1 := inner.X.(*ast.Ident)
		lit, ok2 := str(inner.Y)
		_, ok3 := outer.Y.(*ast.Ident)
		if ok1 && ok2 && ok3 && strings.HasPrefix(lit, " ") {
			prefix, found = strings.TrimPrefix(lit, " "), true
		}
		return true
	})
	return prefix, found
}

// oaPath turns a ServeMux path pattern into an OpenAPI path:
// "/v3/{$}" is "/v3/", "{name...}" is "{name}".
func oaPath(p string) string {
	p = strings.TrimSuffix(p, "{$}")
	return strings.ReplaceAll(p, "...}", "}")
}

type oaMetrics struct{}

func (oaMetrics) Request(string, int, time.Duration) {}
func (oaMetrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
}

func TestOpenAPIDocument(t *testing.T) {
	doc := oaLoad(t)
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.0.") {
		t.Errorf("openapi: %q, want 3.0.x", v)
	}
	if v, _ := oaLookup(doc, "info", "title").(string); v != "cairn block storage API" {
		t.Errorf("info.title: %q", v)
	}
	if v, _ := oaLookup(doc, "info", "version").(string); v != "3.0" {
		t.Errorf("info.version: %q", v)
	}
	if v, _ := oaLookup(doc, "components", "securitySchemes", "authToken", "name").(string); v != "X-Auth-Token" {
		t.Errorf("authToken header: %q", v)
	}
	if v, _ := oaLookup(doc, "components", "securitySchemes", "bearerAuth", "scheme").(string); v != "bearer" {
		t.Errorf("bearerAuth scheme: %q", v)
	}
	// Every error name an error gets is documented.
	errDoc, _ := oaLookup(doc, "components", "schemas", "Error", "description").(string)
	for _, err := range append(cairn.Sentinels(), errors.New("internal")) {
		code := cairn.HTTPStatus(err)
		name := errorName(code)
		if !strings.Contains(errDoc, "`"+name+"`") {
			t.Errorf("error name %s (%d, for %v) is not in the Error schema's description", name, code, err)
		}
	}
	seen := map[string]string{}
	for key, op := range oaDocumentedOps(t, doc) {
		id, _ := op["operationId"].(string)
		if id == "" {
			t.Errorf("%s: no operationId", key)
		} else if other, dup := seen[id]; dup {
			t.Errorf("%s: operationId %s also used by %s", key, id, other)
		}
		seen[id] = key
		ok2xx := false
		for code := range oaMap(op["responses"]) {
			// The versions document answers 300, as the block
			// storage API's does.
			ok2xx = ok2xx || strings.HasPrefix(code, "2") || key == "GET /" && code == "300"
		}
		if !ok2xx {
			t.Errorf("%s: no 2xx response", key)
		}
	}
}

func TestOpenAPIRoutes(t *testing.T) {
	doc := oaLoad(t)
	documented := oaDocumentedOps(t, doc)
	registered := oaRegisteredRoutes(t)
	for key, pattern := range registered {
		if _, ok := documented[key]; !ok {
			t.Errorf("route %q is not documented in openapi.yaml (as %s)", pattern, key)
		}
	}
	for key := range documented {
		if _, ok := registered[key]; !ok {
			t.Errorf("openapi.yaml documents %s, which routes() does not register", key)
		}
	}

	// The documented paths reach the documented routes in the real mux
	// (which also checks that the source was read right).
	s := New(nil, oaMetrics{}, nil)
	fill := regexp.MustCompile(`\{[^}]*\}`)
	for key, pattern := range registered {
		method, path, _ := strings.Cut(key, " ")
		r := httptest.NewRequest(method, fill.ReplaceAllString(path, "x1"), nil)
		if _, got := s.mux.Handler(r); got != pattern {
			t.Errorf("%s: the mux routes %s %s to %q", key, method, r.URL.Path, got)
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	s := New(nil, nil, nil)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/openapi.yaml", nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != http.StatusOK || string(body) != string(OpenAPI) {
		t.Fatalf("GET /openapi.yaml: %d, %d bytes; want 200 and the embedded %d", rec.Code, len(body), len(OpenAPI))
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/yaml" {
		t.Errorf("Content-Type %q", ct)
	}
}

func TestOpenAPIRefs(t *testing.T) {
	doc := oaLoad(t)
	n := 0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case []any:
			for i, x := range v {
				walk(path+"/"+strconv.Itoa(i), x)
			}
		default:
			m := oaMap(v)
			for k, x := range m {
				if k == "$ref" {
					n++
					ref, _ := x.(string)
					if _, ok := oaResolve(doc, ref); !ok {
						t.Errorf("%s: $ref %q does not resolve", path, ref)
					}
					continue
				}
				walk(path+"/"+k, x)
			}
		}
	}
	walk("#", doc)
	if n == 0 {
		t.Error("no $ref at all")
	}
}

func TestOpenAPIPathParameters(t *testing.T) {
	doc := oaLoad(t)
	wild := regexp.MustCompile(`\{([^}]*)\}`)
	for path, item := range oaMap(doc["paths"]) {
		want := map[string]bool{}
		for _, m := range wild.FindAllStringSubmatch(path, -1) {
			want[m[1]] = true
		}
		pathLevel := oaMap(item)["parameters"]
		for _, method := range oaMethods {
			op := oaMap(oaMap(item)[method])
			if op == nil {
				continue
			}
			got := map[string]bool{}
			for _, list := range []any{pathLevel, op["parameters"]} {
				ps, _ := list.([]any)
				for _, p := range ps {
					pm := oaDeref(t, doc, p)
					if pm["in"] != "path" {
						continue
					}
					name, _ := pm["name"].(string)
					if pm["required"] != true {
						t.Errorf("%s %s: path parameter %s not required", method, path, name)
					}
					got[name] = true
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s %s: path parameters %v, want %v", method, path, oaKeys(got), oaKeys(want))
			}
		}
	}
}

func oaKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestOpenAPIListParameters holds the documented list parameters to the
// code's limits and sort keys.
func TestOpenAPIListParameters(t *testing.T) {
	doc := oaLoad(t)
	limit := oaMap(oaLookup(doc, "components", "parameters", "Limit", "schema"))
	for k, want := range map[string]int{"default": DefaultLimit, "minimum": 0} {
		if got, _ := limit[k].(int); got != want {
			t.Errorf("limit %s: %v, want %d", k, limit[k], want)
		}
	}
	// Above the largest page is that page, not an error: no maximum,
	// and the description names the cap.
	if _, ok := limit["maximum"]; ok {
		t.Errorf("limit has a maximum: %v; a larger limit is capped, not refused", limit["maximum"])
	}
	if desc, _ := oaLookup(doc, "components", "parameters", "Limit", "description").(string); !strings.Contains(desc, strconv.Itoa(MaxLimit)) {
		t.Errorf("limit's description does not name the cap %d: %q", MaxLimit, desc)
	}
	for _, name := range []string{"SortKey", "BackupSortKey"} {
		enum, _ := oaLookup(doc, "components", "parameters", name, "schema", "enum").([]any)
		if len(enum) == 0 {
			t.Errorf("%s: no enum", name)
		}
		for _, k := range enum {
			if s, _ := k.(string); !service.ValidSortKey(s) && s != "display_name" { // the API's alias of name
				t.Errorf("%s: %v is not a valid sort key", name, k)
			}
		}
	}
	states, _ := oaLookup(doc, "components", "schemas", "TaskState", "enum").([]any)
	want := []any{string(cairn.TaskPending), string(cairn.TaskRunning), string(cairn.TaskDone), string(cairn.TaskFailed)}
	if !reflect.DeepEqual(states, want) {
		t.Errorf("TaskState enum %v, want %v", states, want)
	}
}

// TestOpenAPISchemasMatchGo compares the documented schemas with the Go
// types behind them: the same JSON members, of the same JSON types; in
// answers, members without omitempty are required and pointers nullable.
func TestOpenAPISchemasMatchGo(t *testing.T) {
	doc := oaLoad(t)
	answers := map[string]any{
		"Volume":              wire.Volume{},
		"VolumeAttachment":    wire.VolumeAttachment{},
		"Snapshot":            wire.Snapshot{},
		"SnapshotSummary":     wire.SnapshotSummary{},
		"Backup":              wire.Backup{},
		"Summary":             wire.Summary{},
		"Link":                wire.Link{},
		"TokenInfo":           wire.TokenInfo{},
		"Task":                cairn.Task{},
		"LimitsAnswer":        wire.LimitsAnswer{},
		"AbsoluteLimits":      wire.AbsoluteLimits{},
		"Attachment":          wire.Attachment{},
		"RestoreResult":       wire.RestoreResult{},
		"BackupRecord":        wire.BackupRecord{},
		"BackupRecordContent": service.BackupRecord{},
		"ErrorDetail":         wire.Fault{},
		"AllMetadata":         wire.AllMetadata{},
		"MetadataItem":        wire.MetadataItem{},
		"Message":             wire.Message{},
		"MessageList":         wire.MessageList{},
		"MessageShow":         wire.MessageShow{},
		"Transfer":            wire.Transfer{},
		"Policy":              cairn.Policy{},
		"BackupCheck":         cairn.BackupCheck{},
		"PolicyTarget":        cairn.PolicyTarget{},
		"RetentionRules":      cairn.RetentionRules{},
		"PolicySlot":          cairn.PolicySlot{},
		"PolicyRun":           cairn.PolicyRun{},
		"RetentionDecision":   cairn.RetentionDecision{},
		"RetentionTarget":     cairn.RetentionTarget{},
		"RetentionReport":     cairn.RetentionReport{},

		"Version":       wire.Version{},
		"VolumeVersion": wire.APIVersion{},
		"Instance":      wire.Instance{},
		"InstanceResponse": struct {
			Instance wire.Instance `json:"instance"`
		}{},
		"InstanceList":   troveInstanceList{},
		"DatabaseBackup": wire.DatabaseBackup{},
		"DatabaseBackupResponse": struct {
			Backup wire.DatabaseBackup `json:"backup"`
		}{},
		"DatabaseBackupList": troveBackupList{},
		"Datastore":          wire.Datastore{},
		"DatastoreResponse": struct {
			Datastore wire.Datastore `json:"datastore"`
		}{},
		"DatastoreList": struct {
			Datastores []wire.Datastore `json:"datastores"`
		}{},
		"DatastoreVersionResponse": struct {
			Version wire.DatastoreVersion `json:"version"`
		}{},
		"DatastoreVersionList": struct {
			Versions []wire.DatastoreVersion `json:"versions"`
		}{},
		"FlavorResponse": struct {
			Flavor wire.Flavor `json:"flavor"`
		}{},
		"FlavorList": struct {
			Flavors []wire.Flavor `json:"flavors"`
		}{},
		"BackupStrategyResponse": struct {
			BackupStrategy wire.BackupStrategy `json:"backup_strategy"`
		}{},
		"BackupStrategyList": struct {
			BackupStrategies []wire.BackupStrategy `json:"backup_strategies"`
		}{},
	}
	requests := map[string]any{
		"VolumeCreateRequest":   wire.VolumeCreateRequest{},
		"VolumeUpdateRequest":   wire.VolumeUpdateRequest{},
		"VolumeActionRequest":   wire.VolumeActionRequest{},
		"SnapshotCreateRequest": wire.SnapshotCreateRequest{},
		"SnapshotUpdateRequest": wire.SnapshotUpdateRequest{},
		// Bodies of the metadata calls, and their answers above.
		"AllMetadata":           wire.AllMetadata{},
		"MetadataItem":          wire.MetadataItem{},
		"ResetStatusRequest":    wire.ResetStatusRequest{},
		"SnapshotActionRequest": wire.SnapshotActionRequest{},
		"BackupUpdateRequest":   wire.BackupUpdateRequest{},
		"BackupCreateRequest":   wire.BackupCreateRequest{},
		"RestoreRequest":        wire.RestoreRequest{},
		"ImportRecordRequest":   wire.ImportRecordRequest{},
		"TransferCreateRequest": wire.TransferCreateRequest{},
		"PolicyRequest":         wire.PolicyRequest{},
		"PolicyBody":            wire.PolicyBody{},
		"BackupActionRequest":   wire.BackupActionRequest{},
		"RetentionRequest":      wire.RetentionRequest{},
		"TransferAcceptRequest": wire.TransferAcceptRequest{},

		"InstanceCreateRequest":       wire.InstanceCreateRequest{},
		"DatabaseBackupCreateRequest": wire.DatabaseBackupCreateRequest{},
		"BackupStrategyCreateRequest": wire.BackupStrategyCreateRequest{},
	}
	for _, set := range []struct {
		types  map[string]any
		answer bool
	}{{answers, true}, {requests, false}} {
		for name, v := range set.types {
			schema, ok := oaResolve(doc, "#/components/schemas/"+name)
			if !ok {
				t.Errorf("no schema %s", name)
				continue
			}
			c := oaSchemaCheck{t: t, doc: doc, answer: set.answer}
			c.compare(name, reflect.TypeOf(v), schema)
		}
	}
}

// troveInstanceList and troveBackupList are pages of the database API's
// lists as the handlers write them: the items and, on a full page,
// Trove's "links".
type troveInstanceList struct {
	Instances []wire.Instance `json:"instances"`
	Links     []wire.Link     `json:"links,omitempty"`
}

type troveBackupList struct {
	Backups []wire.DatabaseBackup `json:"backups"`
	Links   []wire.Link           `json:"links,omitempty"`
}

type oaSchemaCheck struct {
	t      *testing.T
	doc    map[string]any
	answer bool
}

var (
	oaTimeType    = reflect.TypeFor[time.Time]()
	oaRawJSONType = reflect.TypeFor[json.RawMessage]()
)

func (c oaSchemaCheck) compare(where string, typ reflect.Type, node any) {
	t := c.t
	s := oaDeref(t, c.doc, node)
	if typ.Kind() == reflect.Pointer {
		// nullable beside a lone allOf is how OpenAPI 3.0 makes a
		// reference nullable.
		if c.answer && s["nullable"] != true && oaMap(node)["nullable"] != true {
			t.Errorf("%s: a pointer in Go, not nullable", where)
		}
		typ = typ.Elem()
	}
	want := ""
	switch {
	case typ == oaRawJSONType:
		// Any JSON: no type to compare, but not base64 either.
		if s["format"] == "byte" {
			t.Errorf("%s: json.RawMessage is JSON, not base64", where)
		}
		return
	case typ == oaTimeType:
		want = "string"
		if s["format"] != "date-time" {
			t.Errorf("%s: format %v, want date-time", where, s["format"])
		}
	case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Uint8:
		want = "string"
		if s["format"] != "byte" {
			t.Errorf("%s: format %v, want byte", where, s["format"])
		}
	case typ.Kind() == reflect.Struct:
		want = "object"
		c.compareStruct(where, typ, s)
	case typ.Kind() == reflect.Slice:
		want = "array"
		c.compare(where+"[]", typ.Elem(), s["items"])
	case typ.Kind() == reflect.Map && typ.Key().Kind() == reflect.String:
		// A JSON object of any members, whose values additionalProperties
		// documents.
		want = "object"
		if s["properties"] != nil {
			t.Errorf("%s: a map in Go, documented with fixed properties", where)
		}
		if s["additionalProperties"] == nil {
			t.Errorf("%s: a map in Go: document its values with additionalProperties", where)
		} else {
			c.compare(where+"{}", typ.Elem(), s["additionalProperties"])
		}
	case typ.Kind() == reflect.String:
		want = "string"
	case typ.Kind() == reflect.Bool:
		want = "boolean"
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Uint64:
		want = "integer"
	case typ.Kind() == reflect.Float32 || typ.Kind() == reflect.Float64:
		want = "number"
	default:
		t.Errorf("%s: Go type %s: teach this test", where, typ)
		return
	}
	if got, _ := s["type"].(string); got != want {
		t.Errorf("%s: type %q, want %q (Go %s)", where, got, want, typ)
	}
}

// oaJSONFields returns a struct's JSON members and whether each is always
// present.
func oaJSONFields(typ reflect.Type) (names []string, fields map[string]reflect.StructField, always map[string]bool) {
	fields, always = map[string]reflect.StructField{}, map[string]bool{}
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			n, fs, al := oaJSONFields(f.Type)
			names = append(names, n...)
			for k, v := range fs {
				fields[k], always[k] = v, al[k]
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
		fields[name] = f
		always[name] = !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero")
	}
	return names, fields, always
}

func (c oaSchemaCheck) compareStruct(where string, typ reflect.Type, s map[string]any) {
	t := c.t
	props := oaMap(s["properties"])
	names, fields, always := oaJSONFields(typ)
	for _, name := range names {
		p, ok := props[name]
		if !ok {
			t.Errorf("%s: Go member %q is not documented", where, name)
			continue
		}
		c.compare(where+"."+name, fields[name].Type, p)
	}
	for name := range props {
		if _, ok := fields[name]; !ok {
			t.Errorf("%s: documented member %q is not in Go %s", where, name, typ)
		}
	}
	if !c.answer {
		if s["additionalProperties"] != false {
			t.Errorf("%s: request objects refuse unknown members: want additionalProperties: false", where)
		}
		return
	}
	req := map[string]bool{}
	list, _ := s["required"].([]any)
	for _, r := range list {
		name, _ := r.(string)
		req[name] = true
	}
	for _, name := range names {
		if always[name] != req[name] {
			t.Errorf("%s: %q required: %v, but always present in Go: %v", where, name, req[name], always[name])
		}
	}
}

// TestOpenAPIMetadataBounds holds the documented bounds of metadata to
// the service's.
func TestOpenAPIMetadataBounds(t *testing.T) {
	md := oaMap(oaLookup(oaLoad(t), "components", "schemas", "Metadata"))
	if got, _ := md["maxProperties"].(int); got != service.MaxMetadataItems {
		t.Errorf("Metadata maxProperties %v, want %d", md["maxProperties"], service.MaxMetadataItems)
	}
	if got, _ := oaLookup(md, "additionalProperties", "maxLength").(int); got != service.MaxMetadataValueLen {
		t.Errorf("Metadata values' maxLength %v, want %d", got, service.MaxMetadataValueLen)
	}
	desc, _ := md["description"].(string)
	for _, want := range []string{
		"1 to " + strconv.Itoa(service.MaxMetadataKeyLen) + " characters",
		"at most " + strconv.Itoa(service.MaxMetadataValueLen),
		"most " + strconv.Itoa(service.MaxMetadataItems) + " items",
	} {
		if !strings.Contains(strings.Join(strings.Fields(desc), " "), want) {
			t.Errorf("Metadata description does not say %q:\n%s", want, desc)
		}
	}
}
