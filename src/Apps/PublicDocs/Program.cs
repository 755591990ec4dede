using System.Reflection;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Xml.Linq;

// The compiler writes the documentation of every member that has a doc comment, internal and
// private ones too; a package's XML file then documents types its user cannot reach. This step
// reads the assembly's metadata and keeps the <member> entries of types a user sees (public, or
// nested public/protected in one) and of their public and protected members.
//
//   Rings.PublicDocs ASSEMBLY XML     rewrites XML in place; prints what it kept and dropped
if (args.Length != 2 || !File.Exists(args[0]) || !File.Exists(args[1]))
{
    Console.Error.WriteLine("usage: Rings.PublicDocs ASSEMBLY XML (both must exist)");
    return 2;
}

var (types, members) = PublicSurface.Read(args[0]);
var document = XDocument.Load(args[1], LoadOptions.PreserveWhitespace);
var all = document.Root?.Element("members")?.Elements("member").ToList() ?? [];
var dropped = 0;
foreach (var member in all)
{
    var id = (string?)member.Attribute("name") ?? string.Empty;
    if (!PublicSurface.Keeps(id, types, members))
    {
        // The whitespace before the entry goes with it, so the file keeps its shape.
        if (member.PreviousNode is XText text && string.IsNullOrWhiteSpace(text.Value))
        {
            text.Remove();
        }

        member.Remove();
        dropped++;
    }
}

document.Save(args[1], SaveOptions.DisableFormatting);
Console.WriteLine($"{Path.GetFileName(args[1])}: kept {all.Count - dropped} documented members, dropped {dropped} a user cannot call");
return 0;

/// <summary>The types and members of an assembly that a user of it can reach, by documentation-id names.</summary>
internal static class PublicSurface
{
    /// <summary>Reads the visible types ("Ns.Outer.Inner`1") and members ("Ns.Type.Member") of an assembly.</summary>
    public static (HashSet<string> Types, HashSet<string> Members) Read(string path)
    {
        using var stream = File.OpenRead(path);
        using var pe = new PEReader(stream);
        var md = pe.GetMetadataReader();
        var types = new HashSet<string>(StringComparer.Ordinal);
        var members = new HashSet<string>(StringComparer.Ordinal);
        foreach (var handle in md.TypeDefinitions)
        {
            var type = md.GetTypeDefinition(handle);
            if (!Visible(md, type))
            {
                continue;
            }

            var name = FullName(md, type);
            types.Add(name);
            foreach (var m in type.GetMethods())
            {
                var method = md.GetMethodDefinition(m);
                if (Reachable(method.Attributes & MethodAttributes.MemberAccessMask))
                {
                    members.Add($"{name}.{md.GetString(method.Name).Replace('.', '#')}");
                }
            }

            foreach (var f in type.GetFields())
            {
                var field = md.GetFieldDefinition(f);
                if (Reachable((MethodAttributes)(field.Attributes & FieldAttributes.FieldAccessMask)))
                {
                    members.Add($"{name}.{md.GetString(field.Name)}");
                }
            }

            foreach (var p in type.GetProperties())
            {
                var property = md.GetPropertyDefinition(p);
                var accessors = property.GetAccessors();
                if (AnyReachable(md, accessors.Getter, accessors.Setter))
                {
                    members.Add($"{name}.{md.GetString(property.Name)}");
                }
            }

            foreach (var e in type.GetEvents())
            {
                var @event = md.GetEventDefinition(e);
                var accessors = @event.GetAccessors();
                if (AnyReachable(md, accessors.Adder, accessors.Remover))
                {
                    members.Add($"{name}.{md.GetString(@event.Name)}");
                }
            }
        }

        return (types, members);
    }

    /// <summary>
    /// Whether a documentation id ("T:Ns.Type", "M:Ns.Type.Method(System.Int32)", "P:Ns.Type.Item(...)")
    /// names something visible. Overloads are matched by name: one reachable overload keeps them all.
    /// </summary>
    public static bool Keeps(string id, HashSet<string> types, HashSet<string> members)
    {
        if (id.Length < 3 || id[1] != ':')
        {
            return true; // not a documentation id: left alone
        }

        var name = id[2..];
        var parameters = name.IndexOf('(');
        if (parameters >= 0)
        {
            name = name[..parameters];
        }

        if (id[0] == 'T')
        {
            return types.Contains(name);
        }

        // Generic methods end in ``N; conversion operators in ~ReturnType.
        var tilde = name.IndexOf('~');
        if (tilde >= 0)
        {
            name = name[..tilde];
        }

        var arity = name.IndexOf("``", StringComparison.Ordinal);
        if (arity >= 0)
        {
            name = name[..arity];
        }

        return members.Contains(name);
    }

    private static bool Visible(MetadataReader md, TypeDefinition type)
    {
        var visibility = type.Attributes & TypeAttributes.VisibilityMask;
        if (!type.GetDeclaringType().IsNil)
        {
            return visibility is TypeAttributes.NestedPublic or TypeAttributes.NestedFamily or TypeAttributes.NestedFamORAssem
                && Visible(md, md.GetTypeDefinition(type.GetDeclaringType()));
        }

        return visibility == TypeAttributes.Public;
    }

    private static string FullName(MetadataReader md, TypeDefinition type)
    {
        var name = md.GetString(type.Name);
        return type.GetDeclaringType().IsNil
            ? (type.Namespace.IsNil ? name : $"{md.GetString(type.Namespace)}.{name}")
            : $"{FullName(md, md.GetTypeDefinition(type.GetDeclaringType()))}.{name}";
    }

    private static bool Reachable(MethodAttributes access) =>
        access is MethodAttributes.Public or MethodAttributes.Family or MethodAttributes.FamORAssem;

    private static bool AnyReachable(MetadataReader md, MethodDefinitionHandle first, MethodDefinitionHandle second) =>
        (!first.IsNil && Reachable(md.GetMethodDefinition(first).Attributes & MethodAttributes.MemberAccessMask))
        || (!second.IsNil && Reachable(md.GetMethodDefinition(second).Attributes & MethodAttributes.MemberAccessMask));
}
