@testable import Registry
import Testing

/// The shapes toml++ asserts on are refused before it sees them; valid files pass untouched.
@Suite("TOMLPrecheck")
struct TOMLPrecheckTests {
    typealias Problem = TOMLPrecheck.Problem

    static let rejected: [(String, Int, Int, Problem)] = [
        ("[!]\n", 1, 2, .tableHeaderKey(found: "!")),
        ("[[[[regir", 1, 3, .tableHeaderKey(found: "[")),
        ("[[\nx]]\n", 1, 3, .tableHeaderKey(found: "\n")),
        ("[ \t.a]", 1, 4, .tableHeaderKey(found: ".")),
        ("\u{FEFF}[\u{12}egir\u{9B}", 1, 2, .tableHeaderKey(found: "\u{12}")),
        ("# [ok]\nk = \"[!]\" # [!]\n\n  [#]\n", 4, 4, .tableHeaderKey(found: "#")),
        ("a = [}\n", 1, 6, .arrayElement(found: "}")),
        ("a = [,\n", 1, 6, .arrayElement(found: ",")),
        ("a = [1,,2]", 1, 8, .arrayElement(found: ",")),
        ("a = [1, }", 1, 9, .arrayElement(found: "}")),
        ("a = [\n  # a comment ]\n  }\n", 3, 3, .arrayElement(found: "}")),
        ("a = [\r\n}\r\n", 2, 1, .arrayElement(found: "}")),
        ("a = [[1], [}]]", 1, 12, .arrayElement(found: "}")),
        ("a = { b = [}] }", 1, 12, .arrayElement(found: "}")),
        ("a = [\u{2028}]", 1, 6, .arrayElement(found: "\u{2028}")),
        ("a = [\u{85}]", 1, 6, .arrayElement(found: "\u{85}")),
        ("""
        [[registry]]
        prefix = "localhost:5000/x"
        location = "registry.example.com/ns/repo"
        mirror = [{ location = "m1.local" }, { location = "m4.local", pull-from-mirror =[ }, { location = "m4.local" }]
        """, 4, 83, .arrayElement(found: "}")),
        ("a = 2000-01-01 1\n", 1, 16, .timeAfterDate),
        ("a = [2000-01-01 1]", 1, 17, .timeAfterDate),
        ("a = { b = 2000-01-01 1}", 1, 22, .timeAfterDate),
        ("a=2000-01-01T:", 1, 14, .timeAfterDate),
        ("a = [1979-05-27tx:00:00]", 1, 17, .timeAfterDate),
    ]

    @Test("refused", arguments: rejected.indices)
    func refused(_ index: Int) {
        let (text, line, column, problem) = Self.rejected[index]
        #expect(TOMLPrecheck.firstProblem(in: text) == TOMLPrecheck.Finding(line: line, column: column, problem: problem))
    }

    /// toml++ checks where a value starts before it refuses one nested too deep, and only then.
    @Test func nesting() {
        #expect(TOMLPrecheck.firstProblem(in: "a = " + String(repeating: "[", count: 256) + "}")?.problem == .arrayElement(found: "}"))
        #expect(TOMLPrecheck.firstProblem(in: "a = " + String(repeating: "{b=", count: 255) + "[}")?.problem == .arrayElement(found: "}"))
        #expect(TOMLPrecheck.firstProblem(in: "a = " + String(repeating: "[", count: 257) + "}") == nil)
        #expect(TOMLPrecheck.firstProblem(in: "a = " + String(repeating: "[", count: 100_000)) == nil)
    }

    /// What toml++ reports itself (it does not assert) is left to it, as is what follows.
    @Test("left to toml++", arguments: ["[]", "[ [x]]", "a = ", "a = ,", "a = [1 }", "x = \"\n[!]", "a = 1 2\n[!]",
                                        "a = [\u{B}}]", "a = [\r}]", "a = \"x\0\"\n[!]", "[\u{A0}"])
    func leftToTOML(_ text: String) throws {
        #expect(TOMLPrecheck.firstProblem(in: text) == nil)
        #expect(throws: RegistryError.self) { try RegistriesConf(toml: text, path: "test.conf") }
    }

    @Test func theErrorNamesTheFileAndTheLine() {
        #expect {
            try RegistriesConf(toml: "[[registry]]\nprefix = \"quay.io\"\nmirror = [}\n", path: "/etc/containers/registries.conf")
        } throws: { error in
            guard let error = error as? RegistryError else { return false }
            return error.kind == .invalidConfiguration && error.message.contains("/etc/containers/registries.conf")
                && error.message.contains("line 3, column 11") && error.message.contains("'}'") && error.message.contains("fix the file")
        }
    }

    static let accepted: [String] = [
        // Fedora's, abridged: the examples in comments are not parsed.
        """
        # For more information on this configuration file, see containers-registries.conf(5).
        #
        # # An array of host[:port] registries to try when pulling an unqualified image, in order.
        unqualified-search-registries = ["registry.fedoraproject.org", "registry.access.redhat.com", "docker.io", "quay.io"]
        #
        # [[registry]]
        # # The "prefix" field is used to choose the relevant [[registry]] TOML table;
        # prefix = "example.com/foo"
        # insecure = false
        # blocked = false
        # location = "internal-registry-for-example.com/bar"
        #
        # [[registry.mirror]]
        # location = "example-mirror-0.local/mirror-for-foo"
        short-name-mode = "enforcing"
        """,
        """
        unqualified-search-registries = [
            "docker.io",   # first
            'quay.io',
            # "ghcr.io",
        ]

        [[registry]]
        prefix = "docker.io"
        location = "docker.io"
        mirror-by-digest-only = false

        [[registry.mirror]]
        location = "mirror.gcr.io"

        [[registry.mirror]]
        location = "127.0.0.1:5000/cache"
        insecure = true
        pull-from-mirror = "digest-only"

        [[ "registry" ]]
        prefix = "*.example.com"
        blocked = true

        [[registry]]
        location = "quay.io"
        mirror = [ { location = "q1.local" }, { location = "q2.local", insecure = true },
        ]
        """,
        // Strings holding what would otherwise be structure.
        #"""
        a = "[}], # \" [!] ,"
        b = 'C:\path\[}'
        c = """
        [!]
        a = [}
        \""" ok """"
        d = '''
        [!] ''' # ']
        e = ['[}', "]", """,""", ''',''']
        "key [!]" = { "x,}" = "[", 'y#' = ']' }
        f = { g = "}", h = [ "}", { i = "]" } ] }
        [ "quoted [!]" . 'literal' . bare ]
        j.k . l = ""
        """#,
        // Everything else a value can be.
        """
        ints = [1, +2, -3, 1_000, 0xDEAD_beef, 0o755, 0b1010]
        floats = [3.14, -0.01, 5e+22, 6.626e-34, inf, -inf, nan, +nan]
        bools = [true, false]
        dates = [1979-05-27T07:32:00Z, 1979-05-27 07:32:00.999999-07:00, 1979-05-27 07:32:00, 1979-05-27, 07:32:00]
        when = 1979-05-27 07:32:00Z
        empty = [ ]
        none = []
        table = {}
        nested = [[1, 2], [[3], []], [{ a = [] }]]
        """,
        "[[registry]]\r\nprefix = \"quay.io\"  # crlf\r\n\r\n[[registry.mirror]]\r\nlocation = \"m.local\"\r\n",
        "\u{FEFF}[[registry]]\nprefix = \"quay.io\"\n",
        "",
        "# only a comment",
    ]

    @Test("accepted", arguments: accepted)
    func acceptedAndValid(_ text: String) throws {
        #expect(TOMLPrecheck.firstProblem(in: text) == nil)
        _ = try RegistriesConf(toml: text, path: "test.conf")
    }
}
