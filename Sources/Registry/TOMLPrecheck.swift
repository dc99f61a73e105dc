/// Finds, before toml++ (TOMLKit's parser) sees the text, the shapes on which toml++ 3.4.0
/// fails an assertion instead of reporting an error: a debug imgvol aborts on them, a release one
/// has undefined behaviour (see Fuzz/README.md, "Found"). All of them are invalid TOML anyway.
///
/// It follows TOML only as far as it must to know where a header's key, an array element and a
/// value begin. At anything else it does not follow it stops and leaves the text to toml++: a
/// valid file never stops it early, and toml++ refuses an invalid one at or before that point, so
/// it never parses what lies after.
struct TOMLPrecheck {
    enum Problem: Equatable, Sendable, CustomStringConvertible {
        /// `[!]`, `[[[x]]]`, `[` and a line break.
        case tableHeaderKey(found: Unicode.Scalar)
        /// `a = [}`, `a = [,`, `a = [1,,2]`.
        case arrayElement(found: Unicode.Scalar)
        /// `a = 2000-01-01 1`, `a = 2000-01-01T:`: a date-time's time cut short.
        case timeAfterDate

        var description: String {
            switch self {
            case .tableHeaderKey(let c):
                "a table header's name must start with a letter, a digit, '-', '_' or a quote, not \(Self.show(c))"
            case .arrayElement(let c):
                "an array element must start with a value, not \(Self.show(c))"
            case .timeAfterDate:
                "after a date, 'T' or a space must be followed by a whole time (HH:MM:SS)"
            }
        }

        static func show(_ c: Unicode.Scalar) -> String {
            if c == "\n" || c == "\r" { return "the end of the line" }
            if c.value >= 0x21 && c.value < 0x7F { return "'\(Character(c))'" }
            var hex = String(c.value, radix: 16, uppercase: true)
            while hex.count < 4 { hex = "0" + hex }
            return "U+" + hex
        }
    }

    struct Finding: Equatable, Sendable {
        /// Both from 1, the column in Unicode scalars.
        var line: Int
        var column: Int
        var problem: Problem
    }

    private enum Stop: Error {
        /// Not followed here: toml++ refuses the text at or before this point.
        case unfollowed
        case found(Finding)
    }

    /// toml++'s `TOML_MAX_NESTED_VALUES`: it refuses a value nested deeper, after checking where
    /// the value starts (so the element of the deepest array is still checked).
    private static let maxDepth = 256

    private let text: [Unicode.Scalar]
    private var at = 0

    private init(_ toml: String) {
        // TOMLKit hands toml++ a C string, so it reads up to the first NUL; toml++ skips a BOM.
        var scalars = Array(toml.unicodeScalars.prefix { $0 != "\0" })
        if scalars.first == "\u{FEFF}" { scalars.removeFirst() }
        text = scalars
    }

    /// The first of the shapes in `toml`, or nil if there is none (valid or not otherwise).
    static func firstProblem(in toml: String) -> Finding? {
        var scanner = TOMLPrecheck(toml)
        do {
            try scanner.document()
            return nil
        } catch {
            switch error {
            case .unfollowed: return nil
            case .found(let finding): return finding
            }
        }
    }

    // MARK: - Grammar

    private mutating func document() throws(Stop) {
        while let c = peek() {
            if try skipBlank() { continue }
            if c == "[" {
                try tableHeader()
            } else if Self.isBareKey(c) || Self.isQuote(c) {
                try keyValue(depth: 0)
            } else {
                throw .unfollowed
            }
            try restOfLine()
        }
    }

    private mutating func tableHeader() throws(Stop) {
        at += 1
        let spaced = skipSpaces()
        var isArray = false
        if peek() == "[" {
            guard !spaced else { throw .unfollowed }   // toml++: "[[array-of-table]] brackets must be contiguous"
            isArray = true
            at += 1
            skipSpaces()
        }
        // toml++ refuses a blank name and spaces other than ' ' and '\t' (no assertion).
        guard let c = peek(), c != "]", !Self.isUnicodeSpace(c) else { throw .unfollowed }
        guard Self.isBareKey(c) || Self.isQuote(c) else { throw found(.tableHeaderKey(found: c)) }
        try key()
        skipSpaces()
        try expect("]")
        if isArray { try expect("]") }
    }

    private mutating func key() throws(Stop) {
        while true {
            guard let c = peek() else { throw .unfollowed }
            if Self.isBareKey(c) {
                while let c = peek(), Self.isBareKey(c) { at += 1 }
            } else if Self.isQuote(c) {
                if try string() { throw .unfollowed }   // a multi-line string is no key
            } else {
                throw .unfollowed
            }
            skipSpaces()
            guard peek() == "." else { return }
            at += 1
            skipSpaces()
        }
    }

    /// `key = value`, at the top or in an inline table `depth` deep.
    private mutating func keyValue(depth: Int) throws(Stop) {
        try key()
        skipSpaces()
        try expect("=")
        skipSpaces()
        guard let c = peek(), !Self.isTerminator(c) else { throw .unfollowed }
        try value(depth: depth + 1)
    }

    private mutating func value(depth: Int) throws(Stop) {
        guard depth <= Self.maxDepth, let c = peek() else { throw .unfollowed }
        switch c {
        case "\"", "'": _ = try string()
        case "[": try array(depth: depth)
        case "{": try inlineTable(depth: depth)
        default: try scalar()
        }
    }

    private mutating func array(depth: Int) throws(Stop) {
        at += 1
        var afterValue = false
        while true {
            while try skipBlank() {}
            guard let c = peek() else { throw .unfollowed }
            if c == "]" { at += 1; return }
            if c == "," && afterValue { at += 1; afterValue = false; continue }
            if afterValue || Self.isUnicodeSpace(c) { throw .unfollowed }
            // toml++ takes any other character for the start of a value, and asserts it is none of these.
            if c == "," || c == "}" || Self.isUnicodeLineBreak(c) { throw found(.arrayElement(found: c)) }
            try value(depth: depth + 1)
            afterValue = true
        }
    }

    private mutating func inlineTable(depth: Int) throws(Stop) {
        at += 1
        var afterPair = false
        while true {
            skipSpaces()
            guard let c = peek() else { throw .unfollowed }
            if c == "}" { at += 1; return }
            if c == "," && afterPair { at += 1; afterPair = false; continue }
            guard !afterPair, Self.isBareKey(c) || Self.isQuote(c) else { throw .unfollowed }
            try keyValue(depth: depth)
            afterPair = true
        }
    }

    /// A number, boolean, date or time: up to the next terminator, with toml++'s one exception,
    /// a date, a space and a digit, which it reads on as a date-time.
    private mutating func scalar() throws(Stop) {
        let start = at
        while let c = peek(), !Self.isTerminator(c) { at += 1 }
        let raw = text[start..<at]
        // toml++ asserts that the time after a date and 'T' starts with a digit.
        if raw.count > 10, Self.isDate(raw.prefix(10)), raw[start + 10] == "T" || raw[start + 10] == "t",
           raw.count == 11 || !Self.isDigit(raw[start + 11]) {
            at = start + 11
            throw found(.timeAfterDate)
        }
        let token = raw.filter { $0 != "_" }
        guard token.count == 10, Self.isDigit(token[0]), token[4] == "-", token[7] == "-",
              peek() == " ", let digit = peek(1), Self.isDigit(digit) else { return }
        // toml++ asserts that a terminator does not follow the digit (at the end it fails).
        guard let next = peek(2), !Self.isTerminator(next) else {
            at += 1
            throw found(.timeAfterDate)
        }
        at += 2
        while let c = peek(), !Self.isTerminator(c) { at += 1 }
    }

    /// Skips a string; true if it was a multi-line one.
    private mutating func string() throws(Stop) -> Bool {
        guard let quote = peek() else { throw .unfollowed }
        let escapes = quote == "\""
        if peek(1) == quote && peek(2) == quote {
            at += 3
            while let c = peek() {
                if c == "\\" && escapes { at += 2; continue }
                guard c == quote else { at += 1; continue }
                var run = 0
                while peek() == quote && run < 5 { at += 1; run += 1 }
                if run >= 3 { return true }
            }
            throw .unfollowed
        }
        at += 1
        while let c = peek() {
            if c == "\n" || c == "\r" { throw .unfollowed }
            at += 1
            if c == quote { return false }
            if c == "\\" && escapes { at += 1 }
        }
        throw .unfollowed
    }

    // MARK: - Blanks

    /// Skips spaces, one line break or one comment; false if there was none of them.
    private mutating func skipBlank() throws(Stop) -> Bool {
        if skipSpaces() { return true }
        if peek() == "#" {
            while let c = peek(), c != "\n", c != "\r" { at += 1 }
            return true
        }
        return try lineBreak()
    }

    @discardableResult
    private mutating func skipSpaces() -> Bool {
        let start = at
        while let c = peek(), c == " " || c == "\t" { at += 1 }
        return at > start
    }

    private mutating func lineBreak() throws(Stop) -> Bool {
        if peek() == "\n" { at += 1; return true }
        guard peek() == "\r" else { return false }
        guard peek(1) == "\n" else { throw .unfollowed }
        at += 2
        return true
    }

    /// After a header or a key-value pair: a comment or the end of the line.
    private mutating func restOfLine() throws(Stop) {
        skipSpaces()
        guard peek() != nil else { return }
        guard try skipBlank() else { throw .unfollowed }
    }

    private mutating func expect(_ c: Unicode.Scalar) throws(Stop) {
        guard peek() == c else { throw .unfollowed }
        at += 1
    }

    // MARK: - Characters

    private func peek(_ ahead: Int = 0) -> Unicode.Scalar? {
        at + ahead < text.count ? text[at + ahead] : nil
    }

    private func found(_ problem: Problem) -> Stop {
        let before = text[..<at]
        let line = before.reduce(1) { $1 == "\n" ? $0 + 1 : $0 }
        let column = at - (before.lastIndex(of: "\n").map { $0 + 1 } ?? 0) + 1
        return .found(Finding(line: line, column: column, problem: problem))
    }

    private static func isBareKey(_ c: Unicode.Scalar) -> Bool {
        (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || isDigit(c) || c == "-" || c == "_"
    }

    private static func isDigit(_ c: Unicode.Scalar) -> Bool { c >= "0" && c <= "9" }

    /// `YYYY-MM-DD`, digits unchecked.
    private static func isDate(_ s: ArraySlice<Unicode.Scalar>) -> Bool {
        s.count == 10 && zip(0..., s).allSatisfy { i, c in i == 4 || i == 7 ? c == "-" : isDigit(c) }
    }

    private static func isQuote(_ c: Unicode.Scalar) -> Bool { c == "\"" || c == "'" }

    /// Line breaks toml++ counts as whitespace but never consumes as one (NEL, LS, PS).
    private static func isUnicodeLineBreak(_ c: Unicode.Scalar) -> Bool {
        c == "\u{85}" || c == "\u{2028}" || c == "\u{2029}"
    }

    /// toml++'s non-ASCII horizontal whitespace, which it refuses wherever it skips spaces.
    private static func isUnicodeSpace(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0xA0, 0x1680, 0x180E, 0x2000...0x200B, 0x202F, 0x205F...0x2060, 0x3000, 0xFEFF: true
        default: false
        }
    }

    /// toml++'s `is_value_terminator`: whitespace (its Unicode set too), `]`, `}`, `,` or `#`.
    private static func isTerminator(_ c: Unicode.Scalar) -> Bool {
        switch c {
        case " ", "\t", "\n", "\u{B}", "\u{C}", "\r", "]", "}", ",", "#": true
        default: isUnicodeSpace(c) || isUnicodeLineBreak(c)
        }
    }
}
