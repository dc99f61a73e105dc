import Registry
import Testing

/// Bad input says what happened and what to do, in the user's words, not Swift's.
@Suite("Bad input")
struct BadInputTests {
    @Test func explicitAuthFileMissing() throws {
        try withTempDir { dir in
            let path = dir + "/nope/auth.json"
            #expect {
                try AuthFile(paths: [path]).validate()
            } throws: { error in
                guard let error = error as? RegistryError else { return false }
                return error.kind == .invalidConfiguration && error.message.contains(path) && error.message.contains("does not exist")
            }
        }
    }

    @Test("explicit auth file that is not auth.json", arguments: ["{not json", "", "[]", #"{"auths": 3}"#])
    func explicitAuthFileNotJSON(text: String) throws {
        try withTempDir { dir in
            let path = dir + "/auth.json"
            try write(text, to: path)
            #expect {
                try AuthFile(paths: [path]).validate()
            } throws: { error in
                guard let error = error as? RegistryError else { return false }
                return error.kind == .invalidConfiguration && error.message.contains(path) && error.message.contains("not valid auth.json")
            }
        }
    }

    @Test func explicitAuthFileValid() throws {
        try withTempDir { dir in
            let path = dir + "/auth.json"
            try write(#"{"auths": {}}"#, to: path)
            try AuthFile(paths: [path]).validate()
        }
    }

    @Test("registries.conf type errors name the key and the type", arguments: [
        ("[[registry]]\nprefix = \"a.example\"\ninsecure = \"yes\"\n", "registry[0].insecure", "boolean"),
        ("[[registry]]\nprefix = 5\n", "registry[0].prefix", "string"),
        ("[[registry]]\nprefix = \"a\"\n[[registry.mirror]]\nlocation = \"m\"\ninsecure = 1\n", "registry[0].mirror[0].insecure", "boolean"),
        ("registry = 3\n", "key registry ", "array"),
        ("[[registry]]\nprefix = \"a\"\nmirror = \"m\"\n", "registry[0].mirror", "array"),
    ])
    func registriesConfTypeError(toml: String, key: String, type: String) {
        do {
            _ = try RegistriesConf(toml: toml, path: "test.conf")
            Issue.record("accepted \(toml)")
        } catch {
            #expect(error.kind == .invalidConfiguration)
            #expect(error.message.contains("test.conf"), "\(error.message)")
            #expect(error.message.contains(key), "\(error.message)")
            #expect(error.message.contains(type), "\(error.message)")
            #expect(!error.message.contains("DecodingError"), "\(error.message)")
            #expect(!error.message.contains("keyNotFound"), "\(error.message)")
        }
    }

    @Test func registriesConfSyntaxError() {
        do {
            _ = try RegistriesConf(toml: "[[registry\nprefix=", path: "test.conf")
            Issue.record("accepted broken TOML")
        } catch {
            #expect(error.message.contains("test.conf") && error.message.contains("TOML"), "\(error.message)")
        }
    }
}
