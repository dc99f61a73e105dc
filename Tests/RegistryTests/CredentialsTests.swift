import Registry
import Testing

@Suite("Credentials")
struct CredentialsTests {
    @Test("parses --creds", arguments: [
        ("user:pass", "user", "pass"),
        ("user:pa:ss", "user", "pa:ss"),
        ("user:", "user", ""),
        ("u@example.com:p w", "u@example.com", "p w"),
    ])
    func parses(text: String, user: String, password: String) throws {
        let c = try Credentials(parsing: text)
        #expect(c == Credentials(username: user, password: password))
    }

    @Test("rejects", arguments: ["", "user", ":pass", ":"])
    func rejects(text: String) {
        do {
            _ = try Credentials(parsing: text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.kind == .invalidConfiguration)
        }
    }

    @Test("basic authorization", arguments: [
        ("user", "pass", "Basic dXNlcjpwYXNz"),
        ("Aladdin", "open sesame", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ("a", "", "Basic YTo="),
        ("ü", "p:q", "Basic w7w6cDpx"),
    ])
    func basicAuthorization(user: String, password: String, expected: String) {
        #expect(Credentials(username: user, password: password).basicAuthorization == expected)
    }

    @Test func descriptionNeverShowsThePassword() {
        let secret = "s3cr3t-Pa55"
        let c = Credentials(username: "alice", password: secret)
        let renderings = [
            c.description,
            "\(c)",
            String(describing: c),
            String(reflecting: c),
            "\([c])",
            "\(Optional(c) as Any)",
        ]
        for text in renderings {
            #expect(!text.contains(secret), "leaked in \(text)")
        }
        #expect(c.description.contains("alice"))
    }
}
