import Registry
import Testing

@Suite("AuthFile")
struct AuthFileTests {
    private func creds(_ json: String, registry: String, repository: String) throws -> Credentials? {
        try withTempDir { dir throws in
            let path = dir + "/auth.json"
            try write(json, to: path)
            return try AuthFile(paths: [path]).credentials(registry: registry, repository: repository, explicit: true)
        }
    }

    @Test func bareHostKey() throws {
        let json = #"{"auths": {"quay.io": {"auth": "\#(base64("u:p"))"}}}"#
        #expect(try creds(json, registry: "quay.io", repository: "org/app") == Credentials(username: "u", password: "p"))
        #expect(try creds(json, registry: "ghcr.io", repository: "org/app") == nil)
    }

    @Test func passwordMayContainColons() throws {
        let json = #"{"auths": {"quay.io": {"auth": "\#(base64("u:p:a:ss"))"}}}"#
        #expect(try creds(json, registry: "quay.io", repository: "x") == Credentials(username: "u", password: "p:a:ss"))
    }

    @Test("docker.io is found under docker's own keys", arguments: [
        "https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io", "docker.io", "https://index.docker.io/v1",
    ])
    func dockerHubKeys(key: String) throws {
        let json = #"{"auths": {"\#(key)": {"auth": "\#(base64("hub:pw"))"}}}"#
        #expect(try creds(json, registry: "docker.io", repository: "library/alpine") == Credentials(username: "hub", password: "pw"))
    }

    @Test("URL-shaped keys match the bare host", arguments: [
        "https://quay.io", "https://quay.io/", "http://quay.io/v2/", "quay.io/",
    ])
    func urlKeys(key: String) throws {
        let json = #"{"auths": {"\#(key)": {"auth": "\#(base64("q:w"))"}}}"#
        #expect(try creds(json, registry: "quay.io", repository: "a/b") == Credentials(username: "q", password: "w"))
    }

    @Test func mostSpecificKeyWins() throws {
        let json = """
        {"auths": {
          "quay.io": {"auth": "\(base64("host:1"))"},
          "quay.io/org": {"auth": "\(base64("ns:2"))"},
          "quay.io/org/app": {"auth": "\(base64("repo:3"))"}
        }}
        """
        #expect(try creds(json, registry: "quay.io", repository: "org/app")?.username == "repo")
        #expect(try creds(json, registry: "quay.io", repository: "org/app/sub")?.username == "repo")
        #expect(try creds(json, registry: "quay.io", repository: "org/other")?.username == "ns")
        #expect(try creds(json, registry: "quay.io", repository: "organic/app")?.username == "host")
        #expect(try creds(json, registry: "quay.io", repository: "x")?.username == "host")
    }

    /// Only URL-shaped keys (`https://host/v1/`) are docker's legacy form; a repository that
    /// happens to be named "v1" or "v2" is not, and its credentials belong to it alone.
    @Test func repositoryNamedV1IsNotAURLKey() throws {
        let json = #"{"auths": {"quay.io/team/v1": {"auth": "\#(base64("v1repo:secret"))"}}}"#
        #expect(try creds(json, registry: "quay.io", repository: "team/v1") == Credentials(username: "v1repo", password: "secret"))
        let other = try creds(json, registry: "quay.io", repository: "team/other")
        #expect(other == nil, "credentials for quay.io/team/v1 were offered for quay.io/team/other")
        #expect(try creds(json, registry: "quay.io", repository: "x") == nil)
    }

    @Test func usernameAndPasswordFields() throws {
        let json = #"{"auths": {"127.0.0.1:5000": {"username": "bob", "password": "hunter2"}}}"#
        #expect(try creds(json, registry: "127.0.0.1:5000", repository: "a") == Credentials(username: "bob", password: "hunter2"))
    }

    @Test func identityToken() throws {
        let json = #"{"auths": {"r.example": {"identitytoken": "tok"}}}"#
        #expect(try creds(json, registry: "r.example", repository: "a") == Credentials(username: "<token>", password: "tok"))
    }

    @Test func emptyEntryFallsBackToLessSpecificKey() throws {
        let json = #"{"auths": {"quay.io/org/app": {}, "quay.io": {"auth": "\#(base64("h:p"))"}}}"#
        #expect(try creds(json, registry: "quay.io", repository: "org/app") == Credentials(username: "h", password: "p"))
    }

    @Test func credHelpersOnlyFileHasNoCredentials() throws {
        #expect(try creds(#"{"credHelpers": {"quay.io": "x"}}"#, registry: "quay.io", repository: "a") == nil)
    }

    @Test("bad auth values are errors", arguments: [
        "!!!not base64!!!", base64("no-colon-here"),
    ])
    func invalidAuth(auth: String) {
        let json = #"{"auths": {"quay.io": {"auth": "\#(auth)"}}}"#
        do {
            _ = try creds(json, registry: "quay.io", repository: "a")
            Issue.record("accepted auth \(auth)")
        } catch let error as RegistryError {
            #expect(error.kind == .invalidConfiguration)
            #expect(error.message.contains("quay.io"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func invalidJSONIsAnError() {
        do {
            _ = try creds("{auths:", registry: "quay.io", repository: "a")
            Issue.record("accepted invalid JSON")
        } catch let error as RegistryError {
            #expect(error.kind == .invalidConfiguration)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func explicitMissingFileIsAnError() throws {
        try withTempDir { dir throws in
            let missing = dir + "/nope.json"
            do {
                _ = try AuthFile(paths: [missing]).credentials(registry: "quay.io", repository: "a", explicit: true)
                Issue.record("accepted a missing explicit auth file")
            } catch let error as RegistryError {
                #expect(error.kind == .invalidConfiguration)
                #expect(error.message.contains(missing))
            }
        }
    }

    @Test func missingDefaultFilesMeanNoCredentials() throws {
        try withTempDir { dir throws in
            let file = AuthFile(paths: [dir + "/a.json", dir + "/b/c.json"])
            #expect(try file.credentials(registry: "quay.io", repository: "a", explicit: false) == nil)
        }
    }

    @Test func filesAreTriedInOrder() throws {
        try withTempDir { dir throws in
            let first = dir + "/first.json", second = dir + "/second.json"
            try write(#"{"auths": {"quay.io": {"auth": "\#(base64("first:1"))"}}}"#, to: first)
            try write(#"{"auths": {"quay.io/org/app": {"auth": "\#(base64("second:2"))"}, "ghcr.io": {"auth": "\#(base64("gh:3"))"}}}"#, to: second)
            let file = AuthFile(paths: [dir + "/missing.json", first, second])
            // podman: the first file with any matching key wins, even over a more specific key later.
            #expect(try file.credentials(registry: "quay.io", repository: "org/app", explicit: false)?.username == "first")
            #expect(try file.credentials(registry: "ghcr.io", repository: "x", explicit: false)?.username == "gh")
            #expect(try file.credentials(registry: "docker.io", repository: "library/x", explicit: false) == nil)
        }
    }

    @Test func searchPathsFromEnvironment() {
        #expect(AuthFile.searchPaths(explicit: "/x/auth.json", environment: ["REGISTRY_AUTH_FILE": "/env.json"]) == ["/x/auth.json"])
        #expect(AuthFile.searchPaths(explicit: nil, environment: [
            "REGISTRY_AUTH_FILE": "/env.json", "XDG_RUNTIME_DIR": "/run/user/7", "HOME": "/home/u",
        ]) == ["/env.json", "/run/user/7/containers/auth.json", "/home/u/.config/containers/auth.json", "/home/u/.docker/config.json"])
        #expect(AuthFile.searchPaths(explicit: nil, environment: [
            "XDG_RUNTIME_DIR": "/run/user/7", "XDG_CONFIG_HOME": "/cfg", "DOCKER_CONFIG": "/dcfg", "HOME": "/home/u",
        ]) == ["/run/user/7/containers/auth.json", "/cfg/containers/auth.json", "/dcfg/config.json"])
    }
}

@Suite("AuthFile from JSON bytes")
struct AuthFileJSONTests {
    @Test func inlineJSONMatchesLikeAFile() throws {
        let json = Array(#"{"auths": {"quay.io/org": {"auth": "\#(base64("u:p"))"}, "quay.io": {"auth": "\#(base64("v:q"))"}}}"#.utf8)
        #expect(try AuthFile.credentials(json: json, registry: "quay.io", repository: "org/app", what: "secret") == Credentials(username: "u", password: "p"))
        #expect(try AuthFile.credentials(json: json, registry: "quay.io", repository: "other/app", what: "secret") == Credentials(username: "v", password: "q"))
        #expect(try AuthFile(json: json, what: "secret").credentials(registry: "quay.io", repository: "org/app", explicit: false) == Credentials(username: "u", password: "p"))
        #expect(try AuthFile(json: json, what: "secret").credentials(registry: "ghcr.io", repository: "org/app", explicit: false) == nil)
    }

    @Test func invalidJSONNamesTheSourceNotTheText() throws {
        do {
            _ = try AuthFile.credentials(json: Array("{not json hunter2".utf8), registry: "quay.io", repository: "x", what: "secret .dockerconfigjson")
            Issue.record("expected an error")
        } catch {
            #expect(error.kind == .invalidConfiguration)
            #expect(error.message.contains("secret .dockerconfigjson"))
            #expect(!error.message.contains("hunter2"))
        }
    }
}
