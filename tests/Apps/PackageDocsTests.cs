using System.Reflection;
using System.Xml.Linq;

namespace Rings.Tests.Apps;

/// <summary>
/// The packed libraries' XML documentation covers what a user can call and nothing else: every
/// documented type is visible outside its assembly, every documented member belongs to one and
/// is public or protected, and the public API is still documented.
/// </summary>
public sealed class PackageDocsTests
{
    public static TheoryData<string, string, string> Libraries() => new()
    {
        { "Rings", "T:Rings.DriverQueue`1", "M:Rings.Memory.NativeRegion.#ctor(System.UInt64,System.UInt64)" },
        { "Rings.Linux", "T:Rings.Linux.Ports.Port", "P:Rings.Linux.Device.VhostUserBackendOptions.MaxMemoryBytes" },
    };

    [Theory]
    [MemberData(nameof(Libraries))]
    public void TheXmlDocumentationListsOnlyWhatAUserCanCall(string assemblyName, string publicType, string publicMember)
    {
        var assembly = Assembly.Load(assemblyName);
        var path = Path.ChangeExtension(assembly.Location, ".xml");
        Assert.True(File.Exists(path), $"no documentation next to {assembly.Location}");
        var ids = XDocument.Load(path).Descendants("member").Select(m => (string)m.Attribute("name")!).ToList();
        Assert.Contains(publicType, ids);
        Assert.Contains(publicMember, ids);

        var hidden = new List<string>();
        foreach (var id in ids)
        {
            var name = id[2..].Split('(')[0];
            var typeName = id[0] == 'T' ? name : name[..name.LastIndexOf('.')];
            var type = FindType(assembly, typeName);
            if (type is null || !type.IsVisible)
            {
                hidden.Add(id);
                continue;
            }

            if (id[0] != 'T')
            {
                var member = name[(name.LastIndexOf('.') + 1)..].Split("``")[0].Replace('#', '.');
                var found = type.GetMember(member, BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly);
                if (found.Length > 0 && !found.Any(Reachable))
                {
                    hidden.Add(id);
                }
            }
        }

        Assert.True(hidden.Count == 0, $"{hidden.Count} documented entries a user cannot reach:\n{string.Join('\n', hidden.Take(20))}");
    }

    // "Ns.Outer.Inner`1" in documentation ids is "Ns.Outer+Inner`1" in reflection.
    private static Type? FindType(Assembly assembly, string name)
    {
        var type = assembly.GetType(name);
        for (var dot = name.LastIndexOf('.'); type is null && dot > 0; dot = name.LastIndexOf('.', dot - 1))
        {
            var outer = FindType(assembly, name[..dot]);
            type = outer?.GetNestedType(name[(dot + 1)..], BindingFlags.Public | BindingFlags.NonPublic);
        }

        return type;
    }

    private static bool Reachable(MemberInfo member) => member switch
    {
        MethodBase m => m.IsPublic || m.IsFamily || m.IsFamilyOrAssembly,
        FieldInfo f => f.IsPublic || f.IsFamily || f.IsFamilyOrAssembly,
        PropertyInfo p => p.GetAccessors(nonPublic: true).Any(a => a.IsPublic || a.IsFamily || a.IsFamilyOrAssembly),
        EventInfo e => e.AddMethod is { } add && (add.IsPublic || add.IsFamily || add.IsFamilyOrAssembly),
        Type t => t.IsVisible,
        _ => true,
    };
}
