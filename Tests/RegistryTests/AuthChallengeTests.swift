import Registry
import Testing

@Suite("AuthChallenge")
struct AuthChallengeTests {
    @Test func dockerHubBearer() throws {
        let header = #"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#
        let c = try #require(AuthChallenge(header: header))
        #expect(c.scheme == .bearer)
        #expect(c.realm == "https://auth.docker.io/token")
        #expect(c.service == "registry.docker.io")
        #expect(c.scope == "repository:library/alpine:pull,push")
        #expect(c.parameters.count == 3)
    }

    @Test func bearerWithErrorAndSpacesAfterCommas() throws {
        let header = #"Bearer realm="http://127.0.0.1:5000/token", service="local", scope="repository:a/b:pull", error="insufficient_scope""#
        let c = try #require(AuthChallenge(header: header))
        #expect(c.parameters == [
            "realm": "http://127.0.0.1:5000/token",
            "service": "local",
            "scope": "repository:a/b:pull",
            "error": "insufficient_scope",
        ])
    }

    @Test func unquotedValuesAndCaseInsensitiveNames() throws {
        let c = try #require(AuthChallenge(header: "BEARER Realm=https://x.example/token, Service=reg"))
        #expect(c.scheme == .bearer)
        #expect(c.realm == "https://x.example/token")
        #expect(c.service == "reg")
        #expect(c.scope == nil)
    }

    @Test func escapedQuoteInsideValue() throws {
        let c = try #require(AuthChallenge(header: #"Bearer realm="a\"b,c",service="s""#))
        #expect(c.realm == #"a"b,c"#)
        #expect(c.service == "s")
    }

    @Test func basic() throws {
        let c = try #require(AuthChallenge(header: #"Basic realm="Registry Realm""#))
        #expect(c.scheme == .basic)
        #expect(c.realm == "Registry Realm")

        let bare = try #require(AuthChallenge(header: "basic"))
        #expect(bare.scheme == .basic)
        #expect(bare.parameters.isEmpty)
    }

    @Test func leadingSpaces() throws {
        let c = try #require(AuthChallenge(header: #"   Bearer realm="r""#))
        #expect(c.scheme == .bearer)
        #expect(c.realm == "r")
    }

    @Test("garbage is not a challenge", arguments: [
        "", "   ", "garbage", "Negotiate abc", #"Digest realm="x""#, "Bearerrealm=x", "Basicx realm=y", "OAuth realm=x",
    ])
    func garbage(header: String) {
        #expect(AuthChallenge(header: header) == nil)
    }

    @Test func toleratesMalformedParameters() throws {
        // A key without "=" and an unterminated quote must not hang or crash.
        let c = try #require(AuthChallenge(header: #"Bearer junk, realm="https://r/token", scope="unterminated"#))
        #expect(c.realm == "https://r/token")
        #expect(c.scope == "unterminated")
        #expect(c.parameters["junk"] == nil)
    }
}
