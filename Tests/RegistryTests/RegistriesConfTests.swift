import OCI
import Registry
import Testing

@Suite("RegistriesConf")
struct RegistriesConfTests {
    private func rawEndpoints(_ toml: String, _ reference: String, tlsVerify: Bool = true) throws -> [Endpoint] {
        try RegistriesConf(toml: toml, path: "test.conf").endpoints(for: try Reference(reference), tlsVerify: tlsVerify)
    }

    /// Endpoints as comparable text (Endpoint's memberwise init is not public).
    private func endpoints(_ toml: String, _ reference: String, tlsVerify: Bool = true) throws -> [String] {
        try rawEndpoints(toml, reference, tlsVerify: tlsVerify).map { ep($0.registry, $0.repository, insecure: $0.insecure, mirror: $0.isMirror) }
    }

    private func ep(_ registry: String, _ repository: String, insecure: Bool = false, mirror: Bool = false) -> String {
        "\(registry) \(repository)" + (insecure ? " insecure" : "") + (mirror ? " mirror" : "")
    }

    @Test func noMatchIsTheOrigin() throws {
        let conf = #"[[registry]]"# + "\nprefix = \"quay.io\"\nlocation = \"q.local\"\n"
        #expect(try endpoints(conf, "alpine") == [ep("docker.io", "library/alpine")])
        #expect(try endpoints(conf, "alpine", tlsVerify: false) == [ep("docker.io", "library/alpine", insecure: true)])
        #expect(try endpoints("", "127.0.0.1:5000/a/b:1") == [ep("127.0.0.1:5000", "a/b")])
    }

    @Test func prefixIsRewrittenToLocation() throws {
        let conf = """
        [[registry]]
        prefix = "docker.io/library"
        location = "mirror.local:5000/dockerhub/library"
        """
        #expect(try endpoints(conf, "alpine:3") == [ep("mirror.local:5000", "dockerhub/library/alpine")])
        #expect(try endpoints(conf, "docker.io/other/x") == [ep("docker.io", "other/x")])
    }

    @Test func locationAloneIsThePrefix() throws {
        let conf = """
        [[registry]]
        location = "quay.io"
        insecure = true
        """
        #expect(try endpoints(conf, "quay.io/a/b") == [ep("quay.io", "a/b", insecure: true)])
    }

    @Test func mirrorsComeFirstInOrder() throws {
        let conf = """
        unqualified-search-registries = ["docker.io"]
        short-name-mode = "enforcing"

        [[registry]]
        prefix = "docker.io"
        location = "docker.io"

        [[registry.mirror]]
        location = "m1.local:5000"
        insecure = true

        [[registry.mirror]]
        location = "m2.local/cache"
        """
        #expect(try endpoints(conf, "alpine") == [
            ep("m1.local:5000", "library/alpine", insecure: true, mirror: true),
            ep("m2.local", "cache/library/alpine", mirror: true),
            ep("docker.io", "library/alpine"),
        ])
        #expect(try rawEndpoints(conf, "alpine", tlsVerify: false).map(\.insecure) == [true, true, true])
        #expect(try rawEndpoints(conf, "alpine")[2].apiHost == "registry-1.docker.io")
        #expect(try rawEndpoints(conf, "alpine")[0].apiHost == "m1.local:5000")
        #expect(try rawEndpoints(conf, "alpine")[1].description == "m2.local/cache/library/alpine")
    }

    @Test func pullFromMirrorPolicies() throws {
        let conf = """
        [[registry]]
        prefix = "quay.io"

        [[registry.mirror]]
        location = "digest.local"
        pull-from-mirror = "digest-only"

        [[registry.mirror]]
        location = "tag.local"
        pull-from-mirror = "tag-only"

        [[registry.mirror]]
        location = "all.local"
        pull-from-mirror = "all"
        """
        let digest = "sha256:" + String(repeating: "d", count: 64)
        #expect(try endpoints(conf, "quay.io/a/b:1").map { $0.split(separator: " ")[0] } == ["tag.local", "all.local", "quay.io"])
        #expect(try endpoints(conf, "quay.io/a/b@" + digest).map { $0.split(separator: " ")[0] } == ["digest.local", "all.local", "quay.io"])
        #expect(try endpoints(conf, "quay.io/a/b:1@" + digest).map { $0.split(separator: " ")[0] } == ["digest.local", "all.local", "quay.io"])
    }

    /// containers-registries.conf(5): `mirror-by-digest-only = true` on a [[registry]] means its
    /// mirrors are used only for references with a digest.
    @Test func mirrorByDigestOnly() throws {
        let conf = """
        [[registry]]
        prefix = "quay.io"
        mirror-by-digest-only = true

        [[registry.mirror]]
        location = "m.local"
        """
        let digest = "sha256:" + String(repeating: "e", count: 64)
        let byTag = try endpoints(conf, "quay.io/a/b:1")
        #expect(byTag == [ep("quay.io", "a/b")])
        #expect(try endpoints(conf, "quay.io/a/b@" + digest) == [ep("m.local", "a/b", mirror: true), ep("quay.io", "a/b")])
    }

    @Test func blocked() throws {
        let conf = """
        [[registry]]
        prefix = "evil.example.com"
        blocked = true
        """
        do {
            _ = try endpoints(conf, "evil.example.com/x:1")
            Issue.record("pull from a blocked registry was allowed")
        } catch let error as RegistryError {
            #expect(error.kind == .blocked)
            #expect(error.message.contains("evil.example.com/x:1"))
        }
        #expect(try endpoints(conf, "good.example.com/x") == [ep("good.example.com", "x")])
    }

    @Test func longestPrefixWinsAtPathBoundaries() throws {
        let conf = """
        [[registry]]
        prefix = "quay.io/org"
        location = "b.local/o"

        [[registry]]
        prefix = "quay.io"
        location = "a.local"

        [[registry]]
        prefix = "quay.io/org/app"
        location = "c.local"
        """
        #expect(try endpoints(conf, "quay.io/org/x") == [ep("b.local", "o/x")])
        #expect(try endpoints(conf, "quay.io/org/app/sub") == [ep("c.local", "sub")])
        #expect(try endpoints(conf, "quay.io/organic/x") == [ep("a.local", "organic/x")])
        #expect(try endpoints(conf, "quay.io/other/x") == [ep("a.local", "other/x")])
        #expect(try endpoints(conf, "quay.iox/a") == [ep("quay.iox", "a")])
    }

    @Test func exactRepositoryPrefixKeepsRepository() throws {
        let conf = """
        [[registry]]
        prefix = "quay.io/org/app"
        location = "c.local/mirror/app"
        """
        #expect(try endpoints(conf, "quay.io/org/app:v1") == [ep("c.local", "mirror/app")])
    }

    @Test func wildcardSubdomainsWithLocation() throws {
        let conf = """
        [[registry]]
        prefix = "*.example.com"
        location = "proxy.local/ex"
        """
        #expect(try endpoints(conf, "foo.example.com/app:1") == [ep("proxy.local", "ex/app")])
        #expect(try endpoints(conf, "a.b.example.com/x/y") == [ep("proxy.local", "ex/x/y")])
        #expect(try endpoints(conf, "example.com/app") == [ep("example.com", "app")])
        #expect(try endpoints(conf, "fooexample.com/app") == [ep("fooexample.com", "app")])
        #expect(try endpoints(conf, "foo.example.com.evil.org/app") == [ep("foo.example.com.evil.org", "app")])
    }

    /// containers-registries.conf(5): a wildcard prefix usually has no location; the reference
    /// itself is then the origin, and only the mirrors are added in front of it.
    @Test func wildcardSubdomainsWithoutLocationKeepTheOrigin() throws {
        let conf = """
        [[registry]]
        prefix = "*.example.com"

        [[registry.mirror]]
        location = "mirror.local"
        """
        let got = try endpoints(conf, "foo.example.com/app:1")
        #expect(got == [
            ep("mirror.local", "app", mirror: true),
            ep("foo.example.com", "app"),
        ])
    }

    @Test func exactPrefixBeatsWildcard() throws {
        let conf = """
        [[registry]]
        prefix = "*.example.com"
        location = "wild.local"

        [[registry]]
        prefix = "foo.example.com/team"
        location = "team.local"
        """
        #expect(try endpoints(conf, "foo.example.com/team/app") == [ep("team.local", "app")])
        #expect(try endpoints(conf, "foo.example.com/other") == [ep("wild.local", "other")])
    }

    @Test("invalid configurations", arguments: [
        "[[registry]]\ninsecure = true\n",
        "[[registry]\nprefix = \"x\"",
        "[[registry]]\nprefix = 5\n",
    ])
    func invalid(toml: String) {
        do {
            _ = try RegistriesConf(toml: toml, path: "bad.conf")
            Issue.record("accepted \(toml)")
        } catch {
            #expect(error.kind == .invalidConfiguration)
            #expect(error.message.contains("bad.conf"))
        }
    }

    @Test func loadFromFiles() throws {
        try withTempDir { dir in
            let path = dir + "/registries.conf"
            try write("[[registry]]\nprefix = \"quay.io\"\nlocation = \"q.local\"\n", to: path)

            let explicit = try RegistriesConf.load(explicit: path, environment: [:])
            #expect(explicit.registries.count == 1)
            #expect(explicit.registries.first?.location == "q.local")

            let fromEnv = try RegistriesConf.load(explicit: nil, environment: ["CONTAINERS_REGISTRIES_CONF": path])
            #expect(fromEnv == explicit)

            let cases: [(String?, [String: String])] = [
                (dir + "/missing.conf", [:]),
                (nil, ["CONTAINERS_REGISTRIES_CONF": dir + "/missing.conf"]),
            ]
            for (e, env) in cases {
                do {
                    _ = try RegistriesConf.load(explicit: e, environment: env)
                    Issue.record("accepted a missing file")
                } catch let error as RegistryError {
                    #expect(error.kind == .invalidConfiguration)
                    #expect(error.message.contains("missing.conf"))
                }
            }
        }
    }
}
