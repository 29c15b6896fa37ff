package swift

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ncw/swift/v2"
	"gopkg.in/yaml.v3"

	"github.com/cairnproject/cairn"
)

// cloudsFile is the part of an OpenStack clouds.yaml that matters here.
type cloudsFile struct {
	Clouds map[string]struct {
		Auth struct {
			AuthURL                     string `yaml:"auth_url"`
			Username                    string `yaml:"username"`
			Password                    string `yaml:"password"`
			ProjectName                 string `yaml:"project_name"`
			ProjectID                   string `yaml:"project_id"`
			UserDomainName              string `yaml:"user_domain_name"`
			UserDomainID                string `yaml:"user_domain_id"`
			ProjectDomainName           string `yaml:"project_domain_name"`
			ProjectDomainID             string `yaml:"project_domain_id"`
			ApplicationCredentialID     string `yaml:"application_credential_id"`
			ApplicationCredentialName   string `yaml:"application_credential_name"`
			ApplicationCredentialSecret string `yaml:"application_credential_secret"`
		} `yaml:"auth"`
		RegionName         string `yaml:"region_name"`
		IdentityAPIVersion any    `yaml:"identity_api_version"`
	} `yaml:"clouds"`
}

// cloudsPaths are searched in the order the OpenStack client uses.
func cloudsPaths(getenv func(string) string) []string {
	if p := getenv("OS_CLIENT_CONFIG_FILE"); p != "" {
		return []string{p}
	}
	var paths []string
	paths = append(paths, "clouds.yaml")
	if home := getenv("HOME"); home != "" {
		paths = append(paths, filepath.Join(home, ".config", "openstack", "clouds.yaml"))
	}
	return append(paths, "/etc/openstack/clouds.yaml")
}

// applyCloudsYAML fills conn from the named cloud of the first clouds.yaml
// found.
func applyCloudsYAML(conn *swift.Connection, cloud string, getenv func(string) string) error {
	for _, path := range cloudsPaths(getenv) {
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("swift: reading %s: %w", path, err)
		}
		var f cloudsFile
		if err := yaml.Unmarshal(data, &f); err != nil {
			return fmt.Errorf("swift: %s: %v: %w", path, err, cairn.ErrInvalid)
		}
		c, ok := f.Clouds[cloud]
		if !ok {
			return fmt.Errorf("swift: %s has no cloud %q: %w", path, cloud, cairn.ErrInvalid)
		}
		a := c.Auth
		conn.AuthUrl, conn.UserName, conn.ApiKey = a.AuthURL, a.Username, a.Password
		conn.Tenant, conn.TenantId = a.ProjectName, a.ProjectID
		conn.Domain, conn.DomainId = a.UserDomainName, a.UserDomainID
		conn.TenantDomain, conn.TenantDomainId = a.ProjectDomainName, a.ProjectDomainID
		conn.ApplicationCredentialId, conn.ApplicationCredentialName = a.ApplicationCredentialID, a.ApplicationCredentialName
		conn.ApplicationCredentialSecret = a.ApplicationCredentialSecret
		conn.Region = c.RegionName
		if v := fmt.Sprint(c.IdentityAPIVersion); v == "3" || v == "3.0" {
			conn.AuthVersion = 3
		}
		return nil
	}
	return fmt.Errorf("swift: OS_CLOUD=%s but no clouds.yaml was found: %w", cloud, cairn.ErrInvalid)
}
