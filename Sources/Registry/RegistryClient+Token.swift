import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OCI

extension RegistryClient {
    /// Answers a 401 challenge: the Authorization header to retry with, or nil if there is
    /// nothing to try.
    func authorize(_ endpoint: Endpoint, challenge: AuthChallenge) async throws -> String? {
        let creds = try credentials(for: endpoint)
        switch challenge.scheme {
        case .basic:
            guard let creds else {
                throw RegistryError(.unauthorized, "\(endpoint.registry) requires authentication for \(endpoint.repository); pass --creds USER:PASS or --authfile FILE")
            }
            return creds.basicAuthorization
        case .bearer:
            return "Bearer " + (try await fetchToken(endpoint, challenge: challenge, credentials: creds))
        }
    }

    private func fetchToken(_ endpoint: Endpoint, challenge: AuthChallenge, credentials: Credentials?) async throws -> String {
        guard let realm = challenge.realm, var components = URLComponents(string: realm),
              components.scheme == "https" || components.scheme == "http" else {
            throw RegistryError(.badResponse, "\(endpoint.registry) sent a Bearer challenge without a usable realm")
        }
        if components.scheme == "http" && !endpoint.insecure {
            throw RegistryError(.badResponse, "\(endpoint.registry) asks for credentials over plain HTTP (\(realm)); refusing unless --tls-verify=false")
        }
        var items = components.queryItems ?? []
        if let service = challenge.service { items.append(URLQueryItem(name: "service", value: service)) }
        items.append(URLQueryItem(name: "scope", value: "repository:\(endpoint.repository):pull"))
        components.queryItems = items
        guard let url = components.string else {
            throw RegistryError(.badResponse, "\(endpoint.registry) sent an invalid token realm")
        }
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "User-Agent", value: options.userAgent)
        if let credentials { request.headers.add(name: "Authorization", value: credentials.basicAuthorization) }
        let response = try await client(for: endpoint).execute(request, timeout: headDeadline)
        let tokenService = "token response of \(components.host ?? realm) for \(endpoint.repository)"
        let bytes = try await Self.collect(response, limit: .tokenResponse, tokenService, registry: endpoint.registry)
        switch response.status.code {
        case 200:
            break
        case 401, 403:
            if credentials != nil {
                throw RegistryError(.unauthorized, "\(endpoint.registry) refused the credentials \(credentialSource) for \(endpoint.repository); check the user name and password")
            }
            throw RegistryError(.unauthorized, "authentication to \(endpoint.registry) for \(endpoint.repository) failed: anonymous access was refused; pass --creds USER:PASS or --authfile FILE")
        default:
            throw RegistryError(.network, "token service \(components.host ?? realm) answered HTTP \(response.status.code)")
        }
        struct TokenResponse: Decodable {
            var token: String?
            var access_token: String?
        }
        guard let parsed = try? JSONDecoder().decode(TokenResponse.self, from: Data(bytes)),
              let token = parsed.token ?? parsed.access_token, !token.isEmpty else {
            throw RegistryError(.badResponse, "token service for \(endpoint.registry) returned no token")
        }
        return token
    }
}
