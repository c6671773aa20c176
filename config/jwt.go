package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/boxproxy/boxproxy/internal/safefile"
)

// The jwt method's settings come from the JSON app configuration that the Box
// Developer Console downloads (BOXPROXY_JWT_CONFIG), from the variables, or
// from both. The one rule: each setting may be given in either place, and
// where both give it they must agree. A difference is an error naming the
// variable and the file's field, never a silent choice of one of them.
//
// BOXPROXY_JWT_CONFIG holds a path or the JSON text itself (it starts with
// "{"); BOXPROXY_JWT_PRIVATE_KEY a path or the PEM text itself (it contains
// "-----BEGIN"), because `BOXPROXY_JWT_PRIVATE_KEY="$(cat key.pem)"` is what
// people type.

// appConfig is the part of the Developer Console's JSON file that boxproxy reads.
type appConfig struct {
	BoxAppSettings struct {
		ClientID     string `json:"clientID"`
		ClientSecret string `json:"clientSecret"`
		AppAuth      struct {
			PublicKeyID string `json:"publicKeyID"`
			PrivateKey  string `json:"privateKey"`
			Passphrase  string `json:"passphrase"`
		} `json:"appAuth"`
	} `json:"boxAppSettings"`
	EnterpriseID string `json:"enterpriseID"`
	UserID       string `json:"userID"`
}

// resolveJWT reads the JSON file and the key, merges them with the
// variables, and sets ClientID, ClientSecret, JWTKeyID, JWTPassphrase,
// EnterpriseID, UserID, JWTKey and JWTKeyVar.
func (c *Config) resolveJWT(ps *problems) {
	var key []byte
	c.JWTKeyVar = Prefix + "JWT_PRIVATE_KEY"
	if c.JWTPrivateKey != "" {
		if looksPEM(c.JWTPrivateKey) {
			key = []byte(c.JWTPrivateKey)
		} else if data, ok := readPath(ps, "JWT_PRIVATE_KEY", c.JWTPrivateKey, "a PEM private key file (or the PEM text itself)", safefile.MaxSize); ok {
			if bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
				ps.add("JWT_PRIVATE_KEY", "the file it names holds JSON, not a PEM key: the Developer Console's JSON file goes in %sJWT_CONFIG", Prefix)
			} else {
				key = data
			}
		}
	}
	if c.JWTConfig != "" {
		var data []byte
		if strings.HasPrefix(strings.TrimSpace(c.JWTConfig), "{") {
			data = []byte(c.JWTConfig)
		} else if d, ok := readPath(ps, "JWT_CONFIG", c.JWTConfig, "the JSON app configuration from the Box Developer Console (or the JSON text itself)", safefile.MaxSize); ok {
			data = d
		} else {
			return
		}
		var f appConfig
		if err := json.Unmarshal(data, &f); err != nil {
			hint := ""
			if looksPEM(string(data)) {
				hint = "; it holds a PEM key, which goes in " + Prefix + "JWT_PRIVATE_KEY"
			}
			ps.add("JWT_CONFIG", "%s%s", jsonProblem(err), hint)
			return
		}
		s, field := &f.BoxAppSettings, func(name string) string { return name + " in " + Prefix + "JWT_CONFIG" }
		merge := func(name string, v *string, fromFile, fieldName string) {
			switch fromFile = strings.TrimSpace(fromFile); {
			case fromFile == "":
			case *v == "":
				*v = fromFile
			case *v != fromFile:
				ps.add(name, "differs from %s: give it in one place, or make both agree", field(fieldName))
			}
		}
		merge("CLIENT_ID", &c.ClientID, s.ClientID, "boxAppSettings.clientID")
		merge("CLIENT_SECRET", &c.ClientSecret, s.ClientSecret, "boxAppSettings.clientSecret")
		merge("JWT_KEY_ID", &c.JWTKeyID, s.AppAuth.PublicKeyID, "boxAppSettings.appAuth.publicKeyID")
		// A passphrase may start or end with spaces: compare it as it is.
		switch p := s.AppAuth.Passphrase; {
		case p == "":
		case c.JWTPassphrase == "":
			c.JWTPassphrase = p
		case c.JWTPassphrase != p:
			ps.add("JWT_PASSPHRASE", "differs from %s: give it in one place, or make both agree", field("boxAppSettings.appAuth.passphrase"))
		}
		for _, id := range []struct{ name, v, field string }{{"ENTERPRISE_ID", f.EnterpriseID, "enterpriseID"}, {"USER_ID", f.UserID, "userID"}} {
			if id.v != "" && !IsBoxID(strings.TrimSpace(id.v)) {
				ps.add("JWT_CONFIG", "%s is not a Box ID (digits only)", id.field)
				return
			}
		}
		merge("ENTERPRISE_ID", &c.EnterpriseID, f.EnterpriseID, "enterpriseID")
		merge("USER_ID", &c.UserID, f.UserID, "userID")
		if fk := s.AppAuth.PrivateKey; strings.TrimSpace(fk) != "" {
			switch {
			case key == nil && !ps.has("JWT_PRIVATE_KEY"):
				key, c.JWTKeyVar = []byte(fk), Prefix+"JWT_CONFIG (boxAppSettings.appAuth.privateKey)"
			case key != nil && !bytes.Equal(bytes.TrimSpace(key), bytes.TrimSpace([]byte(fk))):
				ps.add("JWT_PRIVATE_KEY", "differs from %s: give the key in one place, or make both agree", field("boxAppSettings.appAuth.privateKey"))
			}
		}
	}
	c.JWTKey = key
	if key != nil && ps.checkKey != nil && !ps.has("JWT_PRIVATE_KEY") && !ps.has("JWT_PASSPHRASE") && !ps.has("JWT_CONFIG") {
		if err := ps.checkKey(key, c.JWTPassphrase); err != nil {
			switch msg := oneLine(err.Error()); {
			case strings.Contains(msg, "passphrase"):
				ps.add("JWT_PASSPHRASE", "%s", msg)
			case c.JWTKeyVar != Prefix+"JWT_PRIVATE_KEY":
				ps.add("JWT_CONFIG", "boxAppSettings.appAuth.privateKey: %s", msg)
			default:
				ps.add("JWT_PRIVATE_KEY", "%s", msg)
			}
		}
	}
	inFile := func(f string) string {
		if c.JWTConfig == "" {
			return ""
		}
		return " (or " + f + " in " + Prefix + "JWT_CONFIG)"
	}
	for _, n := range []struct{ name, v, field string }{
		{"CLIENT_ID", c.ClientID, "boxAppSettings.clientID"},
		{"CLIENT_SECRET", c.ClientSecret, "boxAppSettings.clientSecret"},
		{"JWT_KEY_ID", c.JWTKeyID, "boxAppSettings.appAuth.publicKeyID"},
		{"JWT_PRIVATE_KEY", string(key), "boxAppSettings.appAuth.privateKey"},
	} {
		if n.v == "" && !ps.has(n.name) && !ps.has("JWT_CONFIG") {
			ps.add(n.name, "the jwt method needs it%s", inFile(n.field))
		}
	}
	if c.EnterpriseID == "" && c.UserID == "" && !ps.has("JWT_CONFIG") {
		ps.add("ENTERPRISE_ID", "the jwt method needs a subject: set it (the Service Account) or %sUSER_ID%s", Prefix, inFile("enterpriseID"))
	}
}

// readPath reads the file that variable name names: a regular file of at
// most limit bytes (never a device or a FIFO, see safefile). Its errors never
// hold the value: a value put in a path variable by mistake is often the
// secret itself.
func readPath(ps *problems, name, path, what string, limit int64) ([]byte, bool) {
	data, err := safefile.Read(strings.TrimSpace(path), limit)
	if err != nil {
		ps.add(name, "cannot read the file it names (%v): it takes the path of %s%s", err, what, valueHint(path))
		return nil, false
	}
	return data, true
}

// valueHint says what a value that is not a readable path looks like,
// without quoting any of it.
func valueHint(v string) string {
	switch t := strings.TrimSpace(v); {
	case strings.Contains(t, "PRIVATE KEY") || strings.HasPrefix(t, "MII"):
		return "; this looks like a PEM key, not a path"
	case strings.HasPrefix(t, "{"):
		return "; this looks like JSON text, not a path"
	case strings.ContainsAny(t, "\r\n"):
		return "; this holds line breaks, so it is not a path"
	}
	return ""
}

func looksPEM(v string) bool { return strings.Contains(v, "-----BEGIN") }

// jsonProblem describes a JSON decoding error by position and field, never by content.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("not valid JSON (at byte %d)", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q has the wrong type (want %s)", te.Field, te.Type)
	}
	return "not valid JSON"
}
